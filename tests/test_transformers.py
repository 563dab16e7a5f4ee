"""Transformers prune and quantize in one fit, fully int8 on LiteRT: every layer kind's int8 output checked against
the quantization-aware model (the default tolerances gate exactly that), and a keras_hub BERT end to end."""

import dataclasses

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint


def _sequences(n=96, steps=8, features=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, steps, features)).astype(np.float32)


def _layer_norm_model():
    import keras as keras3

    inputs = keras3.Input((8, 16), name="x")
    return keras3.Model(inputs, keras3.layers.LayerNormalization(name="norm")(keras3.layers.Dense(16)(inputs)))


def _attention_model():
    import keras as keras3

    inputs = keras3.Input((8, 16), name="x")
    return keras3.Model(inputs, keras3.layers.MultiHeadAttention(2, 8, name="attention")(inputs, inputs))


def _masked_causal_attention_model():
    inputs = keras.Input((8, 16), name="x")
    mask = keras.Input((8, 8), dtype="int32", name="mask")
    attention = keras.layers.MultiHeadAttention(2, 8, name="attention")
    return keras.Model([inputs, mask], attention(inputs, inputs, attention_mask=mask, use_causal_mask=True))


def _einsum_dense_model():
    inputs = keras.Input((8, 16), name="x")
    x = keras.layers.EinsumDense("abc,cde->abde", output_shape=(8, 2, 4), bias_axes="de", name="projection")(inputs)
    return keras.Model(inputs, x)


def _embedding_model():
    import keras as keras3

    tokens = keras3.Input((8,), dtype="int32", name="tokens")
    return keras3.Model(tokens, keras3.layers.Embedding(40, 16, name="embedding")(tokens))


def _gelu_model():
    import keras as keras3

    inputs = keras3.Input((8, 16), name="x")
    x = keras3.layers.Dense(32, activation="gelu", name="fused")(inputs)
    return keras3.Model(inputs, keras3.layers.Activation("gelu", name="layer")(keras3.layers.Dense(16)(x)))


def _encoder_model():
    import keras as keras3
    import keras_hub

    inputs = keras3.Input((8, 16), name="x")
    x = inputs + keras_hub.layers.PositionEmbedding(8, name="positions")(inputs)
    x = keras_hub.layers.TransformerEncoder(32, 2, name="encoder")(x)
    return keras3.Model(inputs, x)


# Each kind: its model, the inputs it takes, and operators its int8 file must hold.
KINDS = {
    "layer_norm": (_layer_norm_model, lambda: _sequences(), {"MEAN", "RSQRT"}),
    "attention": (_attention_model, lambda: _sequences(), {"BATCH_MATMUL", "SOFTMAX"}),
    "masked_causal_attention": (_masked_causal_attention_model,
                                lambda: [_sequences(), (np.random.default_rng(1).random((96, 8, 8)) > 0.2)
                                         .astype(np.int32)], {"SELECT_V2", "SOFTMAX"}),
    "einsum_dense": (_einsum_dense_model, lambda: _sequences(), {"CONV_2D"}),
    "embedding": (_embedding_model, lambda: np.random.default_rng(0).integers(0, 40, (96, 8)).astype(np.int32),
                  {"GATHER"}),
    "gelu": (_gelu_model, lambda: _sequences(), {"GELU"}),
    "keras_hub_encoder": (_encoder_model, lambda: _sequences(), {"BATCH_MATMUL", "RSQRT", "MEAN", "SOFTMAX"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_layer_kinds_int8_output_matches_the_quantization_aware_model(kind, tmp_path):
    build, data, operators = KINDS[kind]
    keras.utils.set_random_seed(0)
    model = build()
    x = data()
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=2), sample_inputs=x, check=False)
    joint.compile(keras.optimizers.Adam(1e-3), "mse")
    outputs = joint.predict(x, verbose=0)
    joint.fit(x, outputs, batch_size=16, epochs=1, verbose=0)  # ranges observed on the data
    # The default tolerances: SQNR of every int8 output against the QAT model it was converted from >= 15 dB.
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "m.tflite"), validation_data=x,
                                   options=tfjoint.ExportOptions(quantization="qat",
                                                                 runtimes=("litert", "litert_reference")))
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "m.tflite").read_bytes())
    assert report.passed and summary.fully_int8 and not summary.float_ops
    assert operators <= set(summary.op_names), summary.op_names
    for runtime in ("litert", "litert_reference"):
        assert report.per_runtime[runtime]["sqnr_db"] >= 15, runtime


def _token_order(n, seed, steps=12, vocabulary=40):
    """Which of two marked tokens comes first: needs attention across the sequence, padded to `steps`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(steps // 2, steps + 1, n)
    tokens = rng.integers(3, vocabulary, (n, steps)).astype(np.int32)
    # two distinct positions after position 0 within each sequence, in random order
    first = np.array([rng.choice(np.arange(1, length), 2, replace=False) for length in lengths])
    first, second = first[:, 0], first[:, 1]
    tokens[np.arange(n), first], tokens[np.arange(n), second] = 1, 2
    padding = (np.arange(steps)[None, :] < lengths[:, None]).astype(np.int32)
    tokens *= padding
    x = {"token_ids": tokens, "segment_ids": np.zeros_like(tokens), "padding_mask": padding}
    return x, (first < second).astype(np.int32)


def bert_tiny_classifier(seed=0, steps=12):
    import keras as keras3
    import keras_hub

    keras3.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=32,
                                             intermediate_dim=64, max_sequence_length=steps, dropout=0.0)
    outputs = keras3.layers.Dense(2, activation="softmax", name="classes")(backbone.output["pooled_output"])
    return keras3.Model(backbone.input, outputs, name="bert_tiny")


@pytest.mark.slow
def test_a_keras_hub_bert_prunes_and_quantizes_in_one_fit_and_runs_fully_int8_in_litert_and_tflm(tmp_path):
    """keras_hub's BertBackbone, prepared for a microcontroller: GELU trains as x * sigmoid(1.702 x) (TFLM has no
    GELU kernel; the int8 GELU a phone runs is checked per layer kind above and in the ConvNeXt test), the file
    runs in LiteRT and in TFLM's own interpreter."""
    import keras as keras3

    x, y = _token_order(1024, 0)
    x_val, y_val = _token_order(256, 1)
    model = bert_tiny_classifier()
    model.compile(keras3.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=32, frequency=8), sample_inputs=x,
                            check=("tflm",))
    joint.compile(keras3.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")  # Keras 3 objects are taken too
    joint.fit(x, y, epochs=2, batch_size=32, verbose=0)
    attention = [pk for pk in tfjoint.inspect.pruned_kernels(joint) if pk.layer_name.endswith("_attention")]
    assert len(attention) == 8  # query, key, value and output kernels of both encoders
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "bert.tflite"), validation_data=(x_val, y_val),
                                   options=tfjoint.ExportOptions(runtimes=("litert", "tflm")))
    assert report.passed and report.fully_int8 and report.keras_accuracy > 0.7  # learned (chance: 0.5)
    assert all(report.per_runtime[runtime]["int8_accuracy"] > 0.7 for runtime in ("litert", "tflm"))
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "bert.tflite").read_bytes())
    assert {"GATHER", "BATCH_MATMUL", "SOFTMAX", "RSQRT", "LOGISTIC"} <= set(summary.op_names)
    assert "GELU" not in summary.op_names
    assert not summary.float_ops and summary.inputs[0].dtype == "int32"  # token ids stay ids
    sparsity = report.per_layer_sparsity["transformer_layer_0_attention"]["tflite"]
    assert sparsity == pytest.approx(0.5, abs=0.01)  # read from the int8 weights of the file
    assert report.memory["tflm_arena_bytes"] > 0  # allocated and run by TFLM


def _keras_hub_decoder_only(cross_attention: bool = False):
    """keras.io's text generation with keras_hub: Embedding + SinePositionEncoding, a decoder-only
    TransformerDecoder (causal), a next-token head at every position."""
    import keras as keras3
    import keras_hub

    keras3.utils.set_random_seed(0)
    tokens = keras3.Input((12,), dtype="int32", name="tokens")
    embedded = keras3.layers.Embedding(30, 16)(tokens)
    x = embedded + keras_hub.layers.SinePositionEncoding()(embedded)
    decoder = keras_hub.layers.TransformerDecoder(32, 2)
    x = decoder(x, x) if cross_attention else decoder(x)
    return keras3.Model(tokens, keras3.layers.Dense(30)(x))


def test_keras_hub_sine_positions_and_a_decoder_only_transformer_are_rebuilt_causal_and_fixed():
    """The rebuilt decoder attends causally (a later token changes no earlier output); the sine table is a
    constant of the keras_hub layer's own values that training leaves alone."""
    import keras_hub

    model3 = _keras_hub_decoder_only()
    tokens = np.random.default_rng(0).integers(0, 30, (4, 12)).astype(np.int32)
    model = tfjoint.from_keras3(model3, tokens)
    np.testing.assert_allclose(model.predict(tokens, verbose=0), model3.predict(tokens, verbose=0),
                               rtol=1e-4, atol=1e-4)
    changed = tokens.copy()
    changed[:, -1] = (changed[:, -1] + 1) % 30
    before, after = model.predict(tokens, verbose=0), model.predict(changed, verbose=0)
    np.testing.assert_allclose(before[:, :-1], after[:, :-1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(before[:, -1], after[:, -1])
    sine = model.get_layer("sine_position_encoding")
    assert not sine.trainable_weights
    np.testing.assert_allclose(sine.get_weights()[0],
                               keras_hub.layers.SinePositionEncoding()(np.zeros((1, 12, 16), np.float32))[0],
                               rtol=1e-6, atol=1e-6)


def test_a_keras_hub_decoder_with_cross_attention_is_refused_by_name():
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="'transformer_decoder.*cross-attention"):
        tfjoint.prepare(_keras_hub_decoder_only(cross_attention=True), tfjoint.JointSchedule(0.5), check=False)


def test_a_layer_tfjoint_cannot_take_yet_is_refused_by_name_before_training():
    inputs = keras.Input((8, 16), name="x")
    attention = keras.layers.MultiHeadAttention(2, 8, attention_axes=(1, 2), name="attention")
    model = keras.Model(inputs, attention(inputs, inputs))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError,
                       match="'attention' \\(MultiHeadAttention\\): it attends over "
                                                            "axes"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4))
    inputs = keras.Input((8, 16), name="x")
    model = keras.Model(inputs, keras.layers.EinsumDense("abc,bd->acd", output_shape=(16, 4), name="mix")(inputs))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError,
                       match="'mix' \\(EinsumDense\\): its equation 'abc,bd->acd'"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4))


def _encoder_classifier(heads=4):
    import keras as keras3

    inputs = keras3.Input((8, 16), name="x")
    attention = keras3.layers.MultiHeadAttention(heads, 8, name="attention")(inputs, inputs)
    x = keras3.layers.LayerNormalization(name="norm")(inputs + attention)
    hidden = keras3.layers.Dense(32, activation="gelu", name="ffn_in")(x)
    x = x + keras3.layers.Dense(16, name="ffn_out")(hidden)
    outputs = keras3.layers.Dense(3, activation="softmax", name="classes")(keras3.layers.GlobalAveragePooling1D()(x))
    return keras3.Model(inputs, outputs)


def _trained_encoder(n: int, seed: int, epochs: int):
    """`_encoder_classifier` trained in float on `n` sequences (which two of two features are positive on average)."""
    import keras as keras3

    x = _sequences(n)
    y = (x[:, :, 0].mean(1) > 0).astype(np.int32) + (x[:, :, 1].mean(1) > 0).astype(np.int32)
    keras3.utils.set_random_seed(seed)
    model = _encoder_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    return model, x, y


@pytest.mark.slow
def test_channel_sparsity_removes_whole_heads_and_ffn_neurons_and_the_file_is_smaller(tmp_path):
    from tfjoint.train.readback import channel_members

    model, x, y = _trained_encoder(160, seed=0, epochs=3)
    # A budget on compute: the planner's cost model counts heads (its MACs are those of the file it builds), and
    # ranks them by the loss each one's removal costs.
    plan = tfjoint.plan_for_budget(model, tfjoint.Budget(macs=24_000), validation_data=(x, y))
    assert plan.channel_fractions.get("attention", 0) > 0, plan
    measured = plan.predicted["measured_in_tflm"]  # the plan's file, built untrained and run in TFLM
    assert plan.predicted["macs"] == measured["macs"] <= 24_000
    # RAM as test_budget holds the planner to it: attention's scratch memory, which no tensor shows, is counted.
    assert plan.predicted["ram_bytes"] == pytest.approx(measured["ram_bytes"], rel=0.1)
    rises = plan.channel_scores["attention"]  # the head scan's (checked in the test that follows)
    # Half the heads and FFN neurons, the heads the scan ranks lowest going first.
    plan = dataclasses.replace(plan, channel_fractions={"attention": 0.5, "ffn_in": 0.5})
    joint = tfjoint.prepare(model, tfjoint.JointSchedule.from_plan(plan, end_step=8, frequency=2), sample_inputs=x,
                            check=False)  # the export below converts it
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    before = joint.predict(x, verbose=0)
    joint.fit(x, y, batch_size=16, epochs=2, verbose=0)
    kept = np.flatnonzero(next(m for m in channel_members(joint) if m.producer and m.group == "attention")
                          .channel_mask.numpy())
    np.testing.assert_array_equal(kept, np.sort(np.argsort(rises)[2:]))
    stripped = tfjoint.strip(joint)
    # The removed heads and neurons were exactly zero: the smaller model computes what the masked one did.
    np.testing.assert_allclose(stripped.predict(x, verbose=0), joint.predict(x, verbose=0), atol=1e-6)
    assert not np.allclose(before, joint.predict(x, verbose=0))  # it trained
    report = tfjoint.export_tflite(stripped, str(tmp_path / "pruned.tflite"), validation_data=(x, y),
                                   options=tfjoint.ExportOptions(runtimes=("litert",)))
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "pruned.tflite").read_bytes())
    assert report.passed and summary.fully_int8
    assert report.per_layer_channels["attention"] == {"original": 4, "keras": 2, "tflite": 2, "unit": "heads"}
    assert any("heads of 'attention' were chosen by a loss scan" in str(n) for n in report.notes), report.notes
    # Read back from the file: the attention scores are (batch, heads, queries, keys) with 2 of 4 heads left, and
    # the FFN's first projection has 16 of its 32 filters.
    tensors = {tensor.index: tensor for tensor in summary.tensors}
    scores = [tensors[op.outputs[0]].shape for op in summary.ops if op.name == "SOFTMAX"
              and len(tensors[op.outputs[0]].shape) == 4]
    assert scores and all(shape[1] == 2 for shape in scores), scores
    filters = [w.shape[0] for w in summary.weights if w.op_name == "CONV_2D" and "ffn_in" in " ".join(w.names)]
    assert filters == [16], [(w.names, w.shape) for w in summary.weights]
    unpruned = tfjoint.prepare(_encoder_classifier(), tfjoint.JointSchedule(0.0, end_step=2), sample_inputs=x,
                               check=False)
    # An untrained reference for its size only: written after the structure check (no validation data).
    tfjoint.export_tflite(tfjoint.strip(unpruned), str(tmp_path / "full.tflite"),
                          options=tfjoint.ExportOptions(runtimes=("litert",)))
    full = tfjoint.inspect.read_flatbuffer((tmp_path / "full.tflite").read_bytes())
    # Attention and FFN weights are 3/4 of this model's; half of them go (the classifier's stay).
    assert sum(w.size for w in summary.weights) < 0.7 * sum(w.size for w in full.weights)


@pytest.mark.slow
def test_convnext_layer_norm_gelu_and_layer_scale_export_fully_int8(tmp_path):
    """keras.applications' ConvNeXt (a four-stage miniature of ConvNeXtTiny): LayerNorm on images, Dense on images
    as 1x1 convolutions, GELU, LayerScale."""
    import keras as keras3
    from keras.src.applications import convnext

    keras3.utils.set_random_seed(0)
    model = convnext.ConvNeXt(depths=[1, 1, 1, 1], projection_dims=[8, 16, 16, 16], input_shape=(32, 32, 3),
                              classes=10, weights=None, name="convnext_mini")
    x = np.random.default_rng(0).random((48, 32, 32, 3)).astype(np.float32) * 255.0
    y = np.random.default_rng(1).integers(0, 10, 48)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4), sample_inputs=x[:8], check=False)
    joint.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    joint.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0)
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "convnext.tflite"),
                                   validation_data=(x[16:], y[16:]),
                                   options=tfjoint.ExportOptions(runtimes=("litert",)))
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "convnext.tflite").read_bytes())
    assert report.passed and summary.fully_int8 and not summary.float_ops
    assert {"RSQRT", "GELU", "DEPTHWISE_CONV_2D"} <= set(summary.op_names)


def keras_io_text_classifier(maxlen: int = 16, vocab_size: int = 20, embed_dim: int = 16):
    """keras.io's "Text classification with Transformer", its two custom layers as the guide writes them."""
    import keras as keras3
    from keras import layers, ops

    class TransformerBlock(layers.Layer):
        def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
            super().__init__()
            self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
            self.ffn = keras3.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
            self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
            self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
            self.dropout1 = layers.Dropout(rate)
            self.dropout2 = layers.Dropout(rate)

        def call(self, inputs):
            attn_output = self.att(inputs, inputs)
            attn_output = self.dropout1(attn_output)
            out1 = self.layernorm1(inputs + attn_output)
            ffn_output = self.ffn(out1)
            ffn_output = self.dropout2(ffn_output)
            return self.layernorm2(out1 + ffn_output)

    class TokenAndPositionEmbedding(layers.Layer):
        def __init__(self, maxlen, vocab_size, embed_dim):
            super().__init__()
            self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x):
            maxlen = ops.shape(x)[-1]
            positions = ops.arange(start=0, stop=maxlen, step=1)
            positions = self.pos_emb(positions)
            x = self.token_emb(x)
            return x + positions

    keras3.utils.set_random_seed(0)
    inputs = layers.Input(shape=(maxlen,))
    x = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)(inputs)
    x = TransformerBlock(embed_dim, 2, 32)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(20, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    outputs = layers.Dense(2, activation="softmax")(x)
    return keras3.Model(inputs=inputs, outputs=outputs)


def _which_marker(n: int, seed: int, maxlen: int = 16, vocab_size: int = 20):
    """Class 1 if the sequence holds token 1, class 0 if it holds token 2 (among random tokens 3..)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(3, vocab_size, (n, maxlen))
    y = rng.integers(0, 2, n)
    x[np.arange(n), rng.integers(0, maxlen, n)] = np.where(y == 1, 1, 2)
    return x.astype(np.float32), y  # as the guide feeds them: a float Input of token ids


@pytest.mark.slow
def test_keras_io_text_transformer_prepares_trains_and_runs_fully_int8_in_tflm_and_litert(tmp_path):
    """The custom layers are rebuilt from their sublayers (the position table found as the embedding it is), the
    float token ids become an int32 input, and the file runs in TFLM as in LiteRT."""
    import keras as keras3

    x, y = _which_marker(768, 0)
    x_val, y_val = _which_marker(192, 1)
    model = keras_io_text_classifier()
    model.compile(keras3.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5), check=("tflm",))
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(x, y, epochs=2, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "text.tflite"), validation_data=(x_val, y_val),
                                   options=tfjoint.ExportOptions(runtimes=("tflm", "litert")))
    assert report.passed and report.fully_int8 and report.int8_accuracy > 0.9
    assert report.inputs[0]["dtype"] == "int32"  # token ids stay ids
    pruned = set(report.per_layer_sparsity)
    assert {"multi_head_attention", "embedding"} <= {name.rstrip("_0123456789") for name in pruned}, pruned
    positions = [layer for layer in joint.layers if "PositionEmbedding" in type(layer).__name__
                 or "PositionEmbedding" in type(getattr(layer, "layer", layer)).__name__]
    assert positions, [type(layer).__name__ for layer in joint.layers]  # the table trains as a table


def keras_ops_transformer(steps: int = 16, vocab_size: int = 20, dim: int = 16, heads: int = 2):
    """A transformer written functionally with keras.ops, as keras.io's examples do: positions from
    zeros_like + arange, heads split by reshape and transpose, attention by matmul and softmax, expand_dims, slices,
    ones_like and arithmetic with constants."""
    import keras as keras3
    from keras import layers, ops

    keras3.utils.set_random_seed(0)
    tokens = keras3.Input((steps,), dtype="int32", name="tokens")
    positions = ops.zeros_like(tokens) + ops.arange(steps)
    x = layers.Embedding(vocab_size, dim, name="tok")(tokens) + layers.Embedding(steps, dim, name="pos")(positions)

    def split(name, order):
        return ops.transpose(ops.reshape(layers.Dense(dim, name=name)(x), (-1, steps, heads, dim // heads)), order)

    scores = ops.matmul(split("q", (0, 2, 1, 3)), split("k", (0, 2, 3, 1))) * (1.0 / np.sqrt(dim // heads))
    context = ops.matmul(ops.softmax(scores, axis=-1), split("v", (0, 2, 1, 3)))
    x = x + layers.Dense(dim, name="o")(ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (-1, steps, dim)))
    first = ops.expand_dims(x, 1)[:, 0, :, :][:, 0]
    scaled = first * (ops.ones_like(first) * 2.0)
    return keras3.Model(tokens, layers.Dense(2, activation="softmax", name="head")(scaled))


@pytest.mark.slow
def test_keras_ops_written_transformer_is_rebuilt_and_runs_fully_int8_in_tflm(tmp_path):
    import keras as keras3

    x, y = _which_marker(768, 0)
    x_val, y_val = _which_marker(192, 1)
    x, x_val = x.astype(np.int32), x_val.astype(np.int32)
    model = keras_ops_transformer()
    model.compile(keras3.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5), check=("tflm",))
    kinds = {type(getattr(layer, "layer", layer)).__name__ for layer in joint.layers}
    assert {"MatMul", "Permute", "Reshape", "Softmax", "FilledLike", "ConstantOp"} <= kinds, kinds
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(x, y, epochs=2, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "ops.tflite"), validation_data=(x_val, y_val),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",)))
    assert report.passed and report.fully_int8 and report.int8_accuracy > 0.9
    assert report.operator_counts["BATCH_MATMUL"] == 2 and report.operator_counts["SOFTMAX"] == 2


def keras_io_vit(image_size: int = 16, patch_size: int = 4, dim: int = 16, heads: int = 2, strides=None,
                 class_token: bool = False):
    """keras.io's "Image classification with Vision Transformer", its `Patches` and `PatchEncoder` layers as the
    guide writes them (patches by `keras.ops.image.extract_patches`, positions by an Embedding of `arange`), GELU
    MLPs and a logits head. `strides` makes the patches overlap; `class_token` adds a weight of the layer's own."""
    import keras as keras3
    from keras import layers, ops

    class Patches(layers.Layer):
        def __init__(self, patch_size):
            super().__init__()
            self.patch_size = patch_size

        def call(self, images):
            input_shape = ops.shape(images)
            batch_size, channels = input_shape[0], input_shape[3]
            patches = keras3.ops.image.extract_patches(images, size=self.patch_size, strides=strides)
            rows, cols = patches.shape[1], patches.shape[2]
            return ops.reshape(patches, (batch_size, rows * cols, self.patch_size * self.patch_size * channels))

    class PatchEncoder(layers.Layer):
        def __init__(self, num_patches, projection_dim):
            super().__init__()
            self.num_patches = num_patches
            self.projection = layers.Dense(units=projection_dim)
            self.position_embedding = layers.Embedding(input_dim=num_patches, output_dim=projection_dim)
            if class_token:
                self.token = self.add_weight(shape=(1, 1, projection_dim), name="class_token")

        def call(self, patch):
            positions = ops.expand_dims(ops.arange(start=0, stop=self.num_patches, step=1), axis=0)
            encoded = self.projection(patch) + self.position_embedding(positions)
            return encoded + self.token if class_token else encoded

    keras3.utils.set_random_seed(0)
    inputs = keras3.Input(shape=(image_size, image_size, 1))
    patches = Patches(patch_size)(inputs)
    encoded = PatchEncoder(patches.shape[1], dim)(patches)
    x1 = layers.LayerNormalization(epsilon=1e-6)(encoded)
    attention = layers.MultiHeadAttention(num_heads=heads, key_dim=dim, dropout=0.1)(x1, x1)
    x2 = layers.Add()([attention, encoded])
    x3 = layers.LayerNormalization(epsilon=1e-6)(x2)
    x3 = layers.Dropout(0.1)(layers.Dense(2 * dim, activation=keras3.activations.gelu)(x3))
    x3 = layers.Dropout(0.1)(layers.Dense(dim, activation=keras3.activations.gelu)(x3))
    x = layers.Flatten()(layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x3, x2])))
    return keras3.Model(inputs, layers.Dense(10)(layers.Dropout(0.5)(x)))


def _digit_images(size: int = 16):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.repeat(np.repeat(digits.images, size // 8, 1), size // 8, 2)[..., None].astype(np.float32) / 16.0
    return images, digits.target


def test_keras_io_vit_patches_and_patch_encoder_become_layers_that_compute_what_keras_does():
    """`extract_patches` is regrouped by Reshape and Permute (no arithmetic), and the position Embedding, called on
    `expand_dims(arange)` outside the graph, trains as a table."""
    model = keras_io_vit()
    images = np.random.default_rng(0).random((8, 16, 16, 1)).astype(np.float32)
    bridged = tfjoint.from_keras3(model, images)
    np.testing.assert_allclose(bridged.predict(images, verbose=0), model.predict(images, verbose=0),
                               atol=1e-4, rtol=1e-4)
    kinds = {type(layer).__name__ for layer in bridged.layers}
    assert {"Permute", "Reshape", "PositionEmbedding"} <= kinds, kinds
    assert "Conv2D" not in kinds and "ConstantOp" not in kinds, kinds
    table = next(layer for layer in bridged.layers if type(layer).__name__ == "PositionEmbedding")
    encoder = next(layer for layer in model.layers if type(layer).__name__ == "PatchEncoder")
    np.testing.assert_array_equal(table.get_weights()[0], encoder.position_embedding.get_weights()[0])
    assert table.trainable_weights


def test_keras_io_mlp_mixer_blocks_in_a_sequential_are_rebuilt_from_their_call():
    """keras.io's MLP-Mixer: custom layers inside a Sequential (no call nodes in its config), each with a
    LayerNormalization it calls twice and `keras.ops.transpose` around Sequential MLPs."""
    import keras as keras3
    from keras import layers, ops

    class MLPMixerLayer(layers.Layer):
        def __init__(self, num_patches, hidden_units, dropout_rate, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.mlp1 = keras3.Sequential([layers.Dense(num_patches, activation="gelu"), layers.Dense(num_patches),
                                           layers.Dropout(dropout_rate)])
            self.mlp2 = keras3.Sequential([layers.Dense(num_patches, activation="gelu"), layers.Dense(hidden_units),
                                           layers.Dropout(dropout_rate)])
            self.normalize = layers.LayerNormalization(epsilon=1e-6)

        def call(self, inputs):
            x = self.normalize(inputs)
            x = ops.transpose(self.mlp1(ops.transpose(x, axes=(0, 2, 1))), axes=(0, 2, 1)) + inputs
            return x + self.mlp2(self.normalize(x))

    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((8, 12))
    x = keras3.Sequential([MLPMixerLayer(8, 12, 0.1) for _ in range(2)])(inputs)
    model3 = keras3.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling1D()(x)))
    x_data = np.random.default_rng(0).normal(size=(8, 8, 12)).astype(np.float32)
    model = tfjoint.from_keras3(model3, x_data)
    np.testing.assert_allclose(model.predict(x_data, verbose=0), model3.predict(x_data, verbose=0),
                               rtol=1e-4, atol=1e-4)
    assert sum(type(layer).__name__ == "Permute" for layer in model.layers) == 4


@pytest.mark.parametrize("variant, expected", [
    ({"strides": 2}, ["(ExtractPatches)", "keras.ops.image.extract_patches", "strides=[2, 2]", "non-overlapping"]),
    ({"class_token": True}, ["PatchEncoder", "class_token", "weights of its own", "Embedding"]),
])
def test_a_keras_io_vit_variant_tfjoint_cannot_rebuild_is_refused_by_name_before_training(variant, expected):
    with pytest.raises(tfjoint.errors.UnsupportedLayerError) as caught:
        tfjoint.prepare(keras_io_vit(**variant), tfjoint.JointSchedule(0.5), check=False)
    assert all(part in str(caught.value) for part in expected), str(caught.value)


@pytest.mark.slow
def test_keras_io_vit_trains_and_runs_fully_int8_in_tflm(tmp_path):
    import keras as keras3

    images, labels = _digit_images()
    model = keras_io_vit()
    model.compile(keras3.optimizers.Adam(3e-3), keras3.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images[:1400], labels[:1400], epochs=4, batch_size=64, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5), sample_inputs=images[:32], check=("tflm",))
    joint.compile(keras.optimizers.Adam(5e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    joint.fit(images[:640], labels[:640], epochs=1, batch_size=64, verbose=0)
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "vit.tflite"),
                                   validation_data=(images[1400:1656], labels[1400:1656]),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",)))
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "vit.tflite").read_bytes())
    assert report.passed and summary.fully_int8 and report.int8_accuracy > 0.7  # chance is 0.1; 0.83 measured
    assert {"TRANSPOSE", "BATCH_MATMUL", "LOGISTIC"} <= set(summary.op_names) and "GELU" not in summary.op_names


def test_a_constant_token_through_a_layer_norm_trains_to_finite_weights():
    """keras.io's epsilon (1e-6) and a token whose channels are all equal (an empty image patch): its variance is
    int8 zero, where the file's RSQRT gives its range's largest value. Training must not see the infinity."""
    inputs = keras.Input((4, 8))
    x = keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Dense(8)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    x_train = np.random.default_rng(0).normal(size=(32, 4, 8)).astype(np.float32)
    x_train[:, 0] = 0.0  # the Dense gives every sample's first token its bias alone, the same in every channel
    model.layers[1].set_weights([model.layers[1].get_weights()[0], np.full(8, 0.5, np.float32)])
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4), check=False)
    joint.compile(keras.optimizers.Adam(1e-3), keras.losses.MeanSquaredError())
    history = joint.fit(x_train, np.zeros((32, 2), np.float32), batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all(), history.history["loss"]
    assert all(np.isfinite(weight).all() for weight in joint.get_weights())
    assert np.isfinite(joint.predict(x_train, verbose=0)).all()


def test_a_raw_op_tfjoint_cannot_rebuild_names_what_it_rebuilds():
    import keras as keras3

    inputs = keras3.Input((8,), name="x")
    model = keras3.Model(inputs, keras3.layers.Dense(2)(keras3.ops.cumsum(inputs, axis=-1)))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError) as caught:
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5), check=False)
    assert "keras.ops.cumsum" in str(caught.value) and "matmul" in str(caught.value)


def test_measured_head_scores_rank_the_heads_training_removes_instead_of_their_norms():
    """`channel_scores` (the planner's head scan) choose which heads go: here the opposite of the norms' choice."""
    from tfjoint.train.readback import channel_members

    x = _sequences(64)
    y = (x[:, :, 0].mean(1) > 0).astype(np.int32)
    float_model = _encoder_classifier()
    query = float_model.get_layer("attention").get_weights()[0]  # (dim, heads, key_dim)
    norms = np.abs(query).sum(axis=(0, 2))
    scores = tuple(float(-n) for n in norms)  # the weakest heads by norm are the most important by measurement
    schedule = tfjoint.JointSchedule(0.0, end_step=2, frequency=1, channel_sparsity={"attention": 0.5},
                                     channel_scores={"attention": scores})
    assert tfjoint.JointSchedule.from_dict(schedule.to_dict()) == schedule
    joint = tfjoint.prepare(float_model, schedule, sample_inputs=x, check=False)
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=16, epochs=1, verbose=0)
    producer = next(m for m in channel_members(joint) if m.producer and m.group == "attention")
    kept = np.flatnonzero(producer.channel_mask.numpy())
    np.testing.assert_array_equal(kept, np.sort(np.argsort(norms)[:2]))  # the two smallest norms, kept
    assert tfjoint.strip(joint).get_layer("quant_attention").layer.num_heads == 2
    with pytest.raises(tfjoint.errors.ConfigError, match=r"channel_scores\['attention'\]` has 3 scores; group "):
        tfjoint.prepare(float_model, schedule.replace(channel_scores={"attention": (1.0, 2.0, 3.0)}),
                        sample_inputs=x, check=False)
    with pytest.raises(tfjoint.errors.ConfigError, match=r"channel_scores\['attention'\]` must be a non-empty list"):
        schedule.replace(channel_scores={"attention": (1.0, float("nan"))})


def test_the_head_scan_scores_each_head_by_the_loss_its_removal_costs():
    import keras as keras3

    from tfjoint.plan.for_budget import scan_heads

    model, x, y = _trained_encoder(96, seed=1, epochs=2)
    scores = scan_heads(model, (x, y))
    assert set(scores) == {"attention"} and len(scores["attention"]) == 4
    loss = keras3.losses.SparseCategoricalCrossentropy()
    baseline = float(loss(y, model.predict(x, verbose=0)))
    output = model.get_layer("attention")._output_dense.kernel
    original, rises = output.numpy(), []
    for head in range(4):  # each head removed alone, measured here on the user's Keras 3 model
        output.assign(np.where(np.arange(4)[:, None, None] == head, 0.0, original))
        rises.append(float(loss(y, model.predict(x, verbose=0))) - baseline)
    output.assign(original)
    np.testing.assert_allclose(scores["attention"], rises, atol=1e-4)
    assert len(set(np.round(rises, 6))) == 4  # the heads differ, so the order means something
    with pytest.raises(tfjoint.errors.DataError, match="`validation_data` is required"):
        scan_heads(model, None)


def test_pruning_the_heads_of_one_attention_layer_leaves_the_others_whole():
    import keras as keras3

    inputs = keras3.Input((8, 16), name="x")
    x = inputs + keras3.layers.MultiHeadAttention(4, 8, name="first")(inputs, inputs)
    x = x + keras3.layers.MultiHeadAttention(2, 8, name="second")(x, x)
    outputs = keras3.layers.Dense(3, activation="softmax", name="classes")(keras3.layers.GlobalAveragePooling1D()(x))
    x_train = _sequences(32)
    schedule = tfjoint.JointSchedule(0.0, end_step=1, channel_sparsity={"first": 0.5})
    joint = tfjoint.prepare(keras3.Model(inputs, outputs), schedule, sample_inputs=x_train, check=False)
    joint.compile("adam", "sparse_categorical_crossentropy")
    joint.fit(x_train, np.zeros(32, np.int32), batch_size=16, epochs=1, verbose=0)
    stripped = tfjoint.strip(joint)
    assert [stripped.get_layer(f"quant_{name}").layer.num_heads for name in ("first", "second")] == [2, 2]
    np.testing.assert_allclose(stripped.predict(x_train, verbose=0), joint.predict(x_train, verbose=0), atol=1e-6)


def _dot_attention_model(use_scale: bool = True):
    """Luong attention over an LSTM-free sequence: keras.layers.Attention on [query, value, key]."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 6), name="x")
    query = keras.layers.Dense(6, name="query")(inputs)
    key = keras.layers.Dense(6, name="key")(inputs)
    attended = keras.layers.Attention(use_scale=use_scale, name="attention")([query, inputs, key])
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(attended)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classes")(pooled))


def test_keras_dot_attention_becomes_integer_operators_computing_what_keras_computes():
    from tfjoint.quantize.substitution import substituted

    model = _dot_attention_model()
    model.get_layer("attention").scale.assign(0.7)  # a trained scale carries over
    x = np.random.default_rng(0).normal(size=(16, 8, 6)).astype(np.float32)
    stand_in = substituted(model)
    assert type(stand_in.get_layer("attention")).__name__ == "IntegerDotAttention"
    np.testing.assert_allclose(stand_in.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    inputs = keras.Input((8, 6))
    concat = keras.Model(inputs, keras.layers.Attention(score_mode="concat", name="additive")([inputs, inputs]))
    with pytest.raises(tfjoint.UnsupportedLayerError, match="'additive'.*score_mode is 'concat'"):
        tfjoint.prepare(concat, 0.5, check=False)


@pytest.mark.slow
def test_keras_dot_attention_runs_fully_int8_in_litert_and_tflm(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8, 6)).astype(np.float32)
    y = (x[:, :, 0].max(axis=1) > x[:, :, 1].max(axis=1)).astype(np.int32) + (x[:, 0, 2] > 1)
    model = _dot_attention_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=8, frequency=4), check=False)
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(x, y, epochs=2, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "attention.tflite"), validation_data=(x[:128], y[:128]),
                                   options=tfjoint.ExportOptions(runtimes=("litert", "tflm"), quantization="qat"))
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "attention.tflite").read_bytes())
    assert report.passed and summary.fully_int8, report  # at the default tolerances, in both runtimes
    assert {"BATCH_MATMUL", "SOFTMAX", "MUL"} <= set(summary.op_names)  # scores, weights, the trained scale
