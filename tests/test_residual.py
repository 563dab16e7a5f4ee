"""A transformer's residual width narrowed: the same channels gone from every layer that writes, carries or reads
the residual stream (`JointSchedule(residual_sparsity=...)`, `tfjoint.prune.residual`)."""

import numpy as np
import pytest
import tf_keras as keras

import tfjoint
from tfjoint.prune.residual import narrow_residual, residual_plan
from tfjoint.quantize.substitution import substituted
from tfjoint.registry.transformer import PositionEmbedding

L = keras.layers
STEPS, VOCABULARY, WIDTH = 12, 40, 32


def _encoder(first=None, blocks=2):
    """Tokens -> Embedding -> pre-norm blocks (attention, ReLU FFN) -> LayerNorm -> pooling -> classes."""
    tokens = keras.Input((STEPS,), dtype="int32", name="tokens")
    x = first(tokens) if first else L.Embedding(VOCABULARY, WIDTH, name="embed")(tokens)
    x = L.Add(name="add_positions")([x, PositionEmbedding(STEPS, name="positions")(x)])  # keras_hub's, rebuilt
    for block in range(blocks):
        h = L.LayerNormalization(epsilon=1e-6, name=f"ln{block}a")(x)
        x = L.Add(name=f"add{block}a")([x, L.MultiHeadAttention(4, 8, name=f"attention{block}")(h, h)])
        h = L.LayerNormalization(epsilon=1e-6, name=f"ln{block}b")(x)
        h = L.Dense(64, activation="relu", name=f"ffn{block}_in")(h)
        x = L.Add(name=f"add{block}b")([x, L.Dense(WIDTH, name=f"ffn{block}_out")(h)])
    x = L.GlobalAveragePooling1D(name="pool")(L.LayerNormalization(name="ln")(x))
    return keras.Model(tokens, L.Dense(3, activation="softmax", name="classes")(x))


def _data(n=192, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCABULARY, (n, STEPS)).astype("int32")
    return x, (np.sum(x < 10, axis=1) > np.sum(x >= 30, axis=1)).astype("int64") + (x[:, 0] < 5)


def test_every_layer_on_the_residual_stream_loses_the_same_channels_and_keeps_its_weights():
    keras.utils.set_random_seed(0)
    model = substituted(_encoder(), ())
    narrowed, plan = narrow_residual(model, 0.5)
    assert plan.width == WIDTH and len(plan.keep) == WIDTH // 2
    assert plan.writes == {"embed", "positions", "attention0", "attention1", "ffn0_out", "ffn1_out"}
    assert plan.reads == {"attention0": {"query", "value", "key"}, "attention1": {"query", "value", "key"},
                          "ffn0_in": {"inputs"}, "ffn1_in": {"inputs"}, "classes": {"inputs"}}
    assert plan.carried == {"ln0a", "ln0b", "ln1a", "ln1b", "ln"}
    keep = plan.keep

    def weights(m, name):
        return {w.name.split("/")[-1].split(":")[0]: w.numpy() for w in m.get_layer(name).weights}

    old, new = weights(model, "embed"), weights(narrowed, "embed")
    np.testing.assert_array_equal(new["embeddings"], old["embeddings"][:, keep])
    old, new = weights(model, "positions"), weights(narrowed, "positions")
    np.testing.assert_array_equal(new["position_embeddings"], old["position_embeddings"][:, keep])
    old, new = weights(model, "attention1"), weights(narrowed, "attention1")
    for side in ("query", "key", "value"):
        np.testing.assert_array_equal(new[f"{side}_kernel"], old[f"{side}_kernel"][keep])
        np.testing.assert_array_equal(new[f"{side}_bias"], old[f"{side}_bias"])  # the heads are not touched
    np.testing.assert_array_equal(new["output_kernel"], old["output_kernel"][..., keep])
    np.testing.assert_array_equal(new["output_bias"], old["output_bias"][keep])
    old, new = weights(model, "ffn0_out"), weights(narrowed, "ffn0_out")
    np.testing.assert_array_equal(new["kernel"], old["kernel"][:, keep])
    old, new = weights(model, "ffn1_in"), weights(narrowed, "ffn1_in")
    np.testing.assert_array_equal(new["kernel"], old["kernel"][keep])
    np.testing.assert_array_equal(new["bias"], old["bias"])
    old, new = weights(model, "ln1b"), weights(narrowed, "ln1b")
    np.testing.assert_array_equal(new["gamma"], old["gamma"][keep])
    np.testing.assert_array_equal(weights(narrowed, "classes")["kernel"], weights(model, "classes")["kernel"][keep])
    assert narrowed.count_params() < 0.6 * model.count_params()
    # Without data, the channels kept are those whose weights weigh most: the embedding column zeroed goes first.
    embeddings = model.get_layer("embed").get_weights()[0]
    embeddings[:, 5] = 0.0
    model.get_layer("embed").set_weights([embeddings])
    assert 5 not in narrow_residual(model, 1 / WIDTH)[1].keep
    # With sample inputs, by what the stream's LayerNorms output on them: a channel every LayerNorm silences goes.
    for name in plan.carried:
        gamma, beta = model.get_layer(name).get_weights()
        gamma[9], beta[9] = 0.0, 0.0
        model.get_layer(name).set_weights([gamma, beta])
    x, _ = _data(32)
    kept = narrow_residual(model, 1 / WIDTH, sample_inputs=x)[1].keep
    assert 9 not in kept and 5 in kept


@pytest.mark.parametrize("model,named", [
    (lambda: keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.Flatten(), L.Dense(2)]),
     "has no residual stream"),
    (lambda: _encoder(first=lambda t: L.Concatenate(name="joined")(
        [L.Embedding(VOCABULARY, WIDTH // 2)(t), L.Embedding(VOCABULARY, WIDTH // 2)(t)])),
     "layer 'joined' \\(Concatenate\\) writes the residual stream"),
    (lambda: (lambda i: keras.Model(i, L.Add()([i, L.Dense(6)(L.LayerNormalization()(i))])))(keras.Input((5, 6))),
     "reaches the model output"),
])
def test_a_model_whose_residual_width_cannot_be_narrowed_is_refused_by_name_before_training(model, named):
    with pytest.raises(tfjoint.errors.ConfigError, match=named):
        tfjoint.prepare(model(), tfjoint.JointSchedule(0.0, residual_sparsity=0.5), check=False)


def test_the_residual_stream_may_not_start_at_the_model_input():
    inputs = keras.Input((STEPS, WIDTH), name="features")
    h = L.LayerNormalization()(inputs)
    x = L.Add()([inputs, L.Dense(WIDTH)(h)])
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling1D()(x)))
    with pytest.raises(tfjoint.errors.ConfigError, match="starts at the model input 'features'"):
        residual_plan(model)


@pytest.mark.slow
def test_a_narrowed_transformer_trains_and_its_file_carries_the_narrower_stream(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = _encoder(blocks=1)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=4, channel_sparsity=0.5,
                                                         residual_sparsity=0.5), sample_inputs=x[:64], check=False)
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=32, epochs=1, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "narrow.tflite"), validation_data=(x, y),
                                   float_model=model, options=tfjoint.ExportOptions(runtimes=("litert",)))
    assert report.passed and report.fully_int8
    assert any("residual width was narrowed" in str(n) and "keep 16 channels" in str(n) for n in report.notes)
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "narrow.tflite").read_bytes())
    tensors = {tensor.index: tensor for tensor in summary.tensors}
    # Read back: the embedding table is 16 wide, every projection reads 16 channels (a 1x1 CONV_2D's filters are
    # (out, 1, 1, in)), and half the heads and FFN neurons are gone too.
    tables = [w.shape for w in summary.weights if w.op_name == "GATHER"]
    assert tables == [(VOCABULARY, WIDTH // 2)], tables
    reads = {w.shape[-1] for w in summary.weights if w.op_name == "CONV_2D" and any(
        name in " ".join(w.names) for name in ("query", "key", "value", "ffn0_in"))}
    assert reads == {WIDTH // 2}, [(w.names, w.shape) for w in summary.weights]
    scores = [tensors[op.outputs[0]].shape for op in summary.ops if op.name == "SOFTMAX"
              and len(tensors[op.outputs[0]].shape) == 4]
    assert scores and all(shape[1] == 2 for shape in scores), scores
