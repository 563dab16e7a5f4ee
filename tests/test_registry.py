"""The layer registry: one entry per kind, found through the MRO, and a user's layer registered like tfjoint's own."""

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint
from tfjoint.prune.channel_groups import plan_channel_groups


@keras.utils.register_keras_serializable(package="test_registry")
class Gain(keras.layers.Layer):
    """A user's layer: each channel times a learned gain (so it maps 0 to 0 and follows its input's channels)."""

    def build(self, input_shape):
        self.gain = self.add_weight("gain", shape=(input_shape[-1],), initializer="ones")
        super().build(input_shape)

    def call(self, inputs):
        return inputs * self.gain


@keras.utils.register_keras_serializable(package="test_registry")
class MyConv(keras.layers.Conv2D):
    """A subclass of a kind tfjoint knows, with no entry of its own."""


def _model(middle):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="first")(inputs)
    x = middle(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="second")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classes")(x))


def test_a_subclass_inherits_its_parents_entry():
    assert tfjoint.registry.kind_of(MyConv(4, 3)) is tfjoint.registry.kind_of(keras.layers.Conv2D)
    model = _model(MyConv(8, 1, name="mine"))
    assert "mine" in tfjoint.inspect.prunable_layers(model)
    producers = {"first", "mine", "second"}
    assert "mine" in plan_channel_groups(model, producers).prunable_groups


def test_an_unregistered_custom_layer_stops_channel_pruning_and_is_refused_with_what_to_do():
    class Opaque(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    model = _model(Opaque(name="opaque"))
    plan = plan_channel_groups(model, {"first", "second"})
    assert plan.groups["first"].frozen_by.startswith("layer 'opaque' (Opaque) is a layer whose channels tfjoint cannot")
    with pytest.raises(tfjoint.errors.UnsupportedLayerError,
                       match="'opaque' \\(Opaque\\).*register_keras_serializable"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4))
    keras.utils.register_keras_serializable(package="test_registry")(Opaque)  # serializable, but no entry
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="'opaque' \\(Opaque\\).*tfjoint.register_layer"):
        tfjoint.prepare(_model(Opaque(name="opaque")), tfjoint.JointSchedule(0.5, end_step=4))


def test_register_layer_checks_what_it_is_given():
    with pytest.raises(tfjoint.ConfigError, match="`layer_class` must be a tf_keras layer class.*received int"):
        tfjoint.register_layer(int, channels="follows")
    with pytest.raises(tfjoint.ConfigError, match="`channels` must be one of .*received 'sideways'"):
        tfjoint.register_layer(Gain, channels="sideways")
    with pytest.raises(tfjoint.ConfigError, match="unknown LayerKind fields \\['prunes'\\]"):
        tfjoint.register_layer(Gain, prunes="kernel")
    with pytest.raises(tfjoint.ConfigError, match="channels='new'.*needs `pruned_weight`"):
        tfjoint.registry.LayerKind(channels="new")


def test_a_scoped_registration_ends_with_its_scope():
    before = tfjoint.registry.kind_of(Gain)
    with tfjoint.registry.scoped():
        kind = tfjoint.register_layer(Gain, channels="follows", tflite_ops=("MUL",))
        assert tfjoint.registry.kind_of(Gain(name="g")) is kind and kind.channels.rule.name == "follows"
    assert tfjoint.registry.kind_of(Gain) is before is None


def test_flat_keywords_and_facets_build_the_same_kind():
    flat = tfjoint.registry.LayerKind.of(channels="follows", channel_axes={"gain": 0}, pruned_weight="gain")
    facets = tfjoint.registry.LayerKind(prune=tfjoint.registry.Pruning(weight="gain"),
                               channels=tfjoint.registry.Channels("follows", axes={"gain": 0}))
    assert flat == facets
    with pytest.raises(tfjoint.ConfigError, match="`Quantization.rewrite` must be a tfjoint.registry.Rewrite "
                                                  "subclass.*received 'conv1d_as_conv2d'"):
        tfjoint.registry.Quantization(rewrite="conv1d_as_conv2d")  # a typo could not silently turn a rewrite off


@pytest.mark.slow
def test_a_layer_kind_added_in_a_scoped_registry_is_followed_by_channel_pruning_and_exports_int8(tmp_path):
    with tfjoint.registry.scoped():
        tfjoint.register_layer(Gain, channels="follows", channel_axes={"gain": 0},
                               sliced_weights={"gain": {"in": 0}},
                               quantization=tfjoint.registry.Quantization.output_only(), tflite_ops=("MUL",))
        _prune_follow_and_export(tmp_path)
    assert tfjoint.registry.kind_of(Gain) is None  # the scope ended: the entry is gone


def _prune_follow_and_export(tmp_path):
    model = _model(Gain(name="gain"))
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 2), dtype=np.float32), rng.integers(0, 3, 64)
    assert "first" in plan_channel_groups(model, {"first", "second"}).prunable_groups  # followed through the gain
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=4, frequency=1, channel_sparsity=0.5))
    joint.compile("adam", "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=16, verbose=0)
    stripped = tfjoint.strip(joint)
    assert stripped.get_layer("quant_gain").layer.gain.shape == (4,)  # sliced with the first conv's channels
    report = tfjoint.export_tflite(stripped, str(tmp_path / "m.tflite"), validation_data=(x, y),
                                   options=tfjoint.ExportOptions(quantization="qat"))
    assert report.fully_int8 and report.per_layer_channels["first"]["tflite"] == 4
    assert report.operator_counts.get("MUL") == 1  # the gain, quantized as its registry entry says
