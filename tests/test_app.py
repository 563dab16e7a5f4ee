"""The app's pieces in-process: the loss it infers, RunConfig's bounds, flags generated from RunConfig."""

import dataclasses

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402
from absl import flags

import tfjoint
from tfjoint.app import flags as app_flags
from tfjoint.app import pipeline
from tfjoint.app.flags import RunConfig
from tfjoint.app.pipeline import run
from tfjoint.losses import infer_loss


def _classifier(head: str) -> keras.Model:
    inputs = keras.Input((6,))
    if head == "activation":
        outputs = keras.layers.Dense(3, activation="softmax")(inputs)
    elif head == "softmax_layer":
        outputs = keras.layers.Softmax()(keras.layers.Dense(3)(inputs))
    elif head == "activation_layer":
        outputs = keras.layers.Activation("softmax")(keras.layers.Dense(3)(inputs))
    elif head == "sigmoid":
        outputs = keras.layers.Dense(1, activation="sigmoid")(inputs)
    elif head == "sigmoid_logit":
        outputs = keras.layers.Dense(1)(inputs)
    elif head == "multi_label":
        outputs = keras.layers.Dense(3, activation="sigmoid")(inputs)
    else:
        outputs = keras.layers.Dense(3)(inputs)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "head,labels,loss_class,from_logits",
    [
        ("activation", np.array([0, 2, 1]), keras.losses.SparseCategoricalCrossentropy, False),
        ("softmax_layer", np.array([0, 2, 1]), keras.losses.SparseCategoricalCrossentropy, False),
        ("activation_layer", np.array([0, 2, 1]), keras.losses.SparseCategoricalCrossentropy, False),
        ("logits", np.array([0, 2, 1]), keras.losses.SparseCategoricalCrossentropy, True),
        ("softmax_layer", np.eye(3)[[0, 2, 1]], keras.losses.CategoricalCrossentropy, False),
        ("sigmoid", np.array([0, 1, 1]), keras.losses.BinaryCrossentropy, False),
        ("sigmoid_logit", np.array([0, 1, 1]), keras.losses.BinaryCrossentropy, True),
        ("sigmoid_logit", np.array([0.2, 1.7, 0.3]), keras.losses.MeanSquaredError, None),
        ("multi_label", np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]]), keras.losses.BinaryCrossentropy, False),
    ],
)
def test_auto_loss_follows_the_labels_and_the_output_layer(head, labels, loss_class, from_logits):
    loss, metrics = infer_loss(_classifier(head), labels, "auto")
    assert type(loss) is loss_class
    if from_logits is not None:
        assert loss.get_config()["from_logits"] is from_logits
        if head == "multi_label":  # per label, as the export measures it (Keras's "accuracy" would take argmax)
            assert [type(m).__name__ for m in metrics] == ["BinaryAccuracy"] and metrics[0].name == "accuracy"
        else:
            assert metrics == ["accuracy"]


def test_a_softmax_layer_classifier_trains_on_probabilities_without_the_keras_warning():
    """The bug the issue names: from_logits=True on a Softmax layer's probabilities learns nothing useful."""
    model = _classifier("softmax_layer")
    loss, _ = infer_loss(model, np.array([0, 1, 2]), "auto")
    probabilities = model(np.ones((2, 6), np.float32))
    expected = np.mean(keras.losses.sparse_categorical_crossentropy(np.array([0, 1]), probabilities).numpy())
    assert float(loss(np.array([0, 1]), probabilities)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(target_sparsity=1.5), "--target_sparsity must be <= 0.99; received 1.5"),
        (dict(epochs=0), "--epochs must be >= 1"),
        (dict(loss="hinge"), "--loss must be one of"),
        (dict(max_accuracy_drop=2.0), "--max_accuracy_drop must be <= 1.0"),
        (dict(epochs=2.5), "--epochs must be an integer; received 2.5"),
        (dict(data="x.npz"), "--data needs --model"),
        (dict(shared_tables="yes"), "--shared_tables must be one of \\['auto', 'always', 'never'\\]; received 'yes'"),
    ],
)
def test_run_config_refuses_what_the_command_line_refuses(changes, match):
    with pytest.raises(tfjoint.ConfigError, match=match):
        RunConfig(**changes)


def test_run_refuses_anything_but_a_run_config():
    with pytest.raises(tfjoint.ConfigError, match="RunConfig; received dict"):
        run({"epochs": 1})


def test_every_field_is_a_flag_with_its_default_and_bounds():
    values = flags.FlagValues()
    app_flags.define_flags(values)
    for field in dataclasses.fields(RunConfig):
        assert values[field.name].default == field.default, field.name
    values(["tfjoint", "--target_sparsity=0.6", "--epochs=3"])
    config = app_flags.config_from_flags(values)
    assert config.target_sparsity == 0.6 and config.epochs == 3 and config.model is None
    assert config.tolerances == tfjoint.Tolerances()  # one set of defaults
    with pytest.raises(flags.IllegalFlagValueError):
        values["target_sparsity"].parse("1.5")


def test_distillation_is_on_by_default_under_a_budget_and_the_flags_say_otherwise():
    values = flags.FlagValues()
    app_flags.define_flags(values)
    for argv, distills in ((["--flash_kb=20"], True), (["--ram_kb=12", "--nodistill"], False), ([], False),
                           (["--distill"], True)):
        values.unparse_flags()
        values(["tfjoint", *argv])
        config = app_flags.config_from_flags(values)
        assert config.distills is distills, argv
        classifier = keras.losses.SparseCategoricalCrossentropy()
        assert pipeline.distills(config, classifier) is distills, argv
        # A regression model is not distilled by default (softened outputs are a classifier's); asked, it is.
        assert pipeline.distills(config, keras.losses.MeanSquaredError()) is (distills and "--distill" in argv)
        # Nor a multi-label one: the Distiller softens a distribution over classes, not independent labels.
        multi = pipeline.distills(config, keras.losses.BinaryCrossentropy(), multi_label=True)
        assert multi is (distills and "--distill" in argv)


def test_lut_with_a_flash_budget_lets_the_plan_choose_bits_and_clusters_fix_them():
    from tfjoint.app.pipeline import compression_for, weight_bits_for

    planned = RunConfig(target="micro", compression="lut", flash_kb=40)  # no --clusters: the plan chooses bits
    assert weight_bits_for(planned) == (8, 4, 2)
    assert weight_bits_for(RunConfig(target="micro", compression="lut", flash_kb=40, clusters=16)) == (8,)
    assert weight_bits_for(RunConfig(target="micro", flash_kb=40)) == (8,)
    eight_bits = tfjoint.CompressionPlan(channel_fractions={"conv2": 0.5})
    assert compression_for(planned, eight_bits) == "tflm"  # nothing shared: nothing to LUT-compress, still reduced
    assert compression_for(planned, tfjoint.CompressionPlan(channel_fractions={}, clusters={"fc1": 16})) == "lut"
    with pytest.raises(tfjoint.ConfigError, match="--compression=lut needs --clusters"):
        RunConfig(target="micro", compression="lut")


def test_a_microcontroller_file_is_reduced_for_tflm_by_default_and_a_phone_file_is_not():
    from tfjoint.app.pipeline import compression_for

    assert compression_for(RunConfig(target="micro"), None) == "tflm"
    assert compression_for(RunConfig(target="phone"), None) == "none"
    assert compression_for(RunConfig(target="micro", compression="none"), None) == "none"
    assert RunConfig(target="micro").export_options("out", "tflm").compression == "tflm"
    with pytest.raises(tfjoint.ConfigError, match="--compression=tflm writes a file only TensorFlow Lite Micro "
                                                  "reads.*--target=phone: use --target=micro"):
        RunConfig(target="phone", compression="tflm")


def test_the_command_trains_the_heads_its_budget_plan_ranked():
    """The plan's head scores reach the schedule the command fits (the in-graph mask update ranks by them)."""
    from tfjoint.prune.allocation import SparsityPlan

    budget_plan = tfjoint.CompressionPlan(channel_fractions={"attention": 0.5, "ffn_in": 0.25},
                                          channel_scores={"attention": (0.3, -0.1, 0.2, 0.0)})
    uniform = SparsityPlan({}, method="uniform", target=0.0, sizes={})
    schedule = pipeline._schedule(RunConfig(target="micro", flash_kb=20), 100, uniform, budget_plan)
    assert dict(schedule.channel_sparsity) == {"attention": 0.5, "ffn_in": 0.25}
    assert dict(schedule.channel_scores) == {"attention": (0.3, -0.1, 0.2, 0.0)}
    assert not pipeline._schedule(RunConfig(), 100, uniform, None).channel_scores


@pytest.mark.parametrize("flag,shared", [("auto", None), ("always", True), ("never", False)])
def test_shared_tables_flag_reaches_the_schedule_the_command_fits(flag, shared):
    from tfjoint.prune.allocation import SparsityPlan

    uniform = SparsityPlan({}, method="uniform", target=0.5, sizes={})
    schedule = pipeline._schedule(RunConfig(clusters=16, shared_tables=flag), 100, uniform, None)
    assert schedule.clusters == 16 and schedule.shared_tables is shared


def test_an_image_folder_is_read_in_the_colour_mode_the_models_input_takes(tmp_path):
    """--color_mode=auto: the same RGB folder is read as grayscale for a 1-channel model, as RGB for a 3-channel one,
    and passes the check against that model (the command's run on RGB images: test_cli)."""
    from conftest import image_classifier, image_folder

    from tfjoint.app import datasets

    images = str(image_folder(tmp_path / "images"))
    for channels, mode in ((1, "grayscale"), (3, "rgb")):
        model = image_classifier(channels)
        assert datasets.color_mode_for(model, "auto") == mode
        data = datasets.load_data(images, (16, 16), 0.2, 0, mode)
        datasets.check_against_model(data, model, images)
        assert data["x_train"].shape[1:] == (16, 16, channels) and len(data["x_val"]) == round(32 * 0.2)
        assert sorted(set(data["y_train"]) | set(data["y_val"])) == [0, 1]
    with pytest.raises(tfjoint.errors.DataError, match="--image_size=16x16 and --color_mode=grayscale"):
        datasets.check_against_model(datasets.load_data(images, (16, 16), 0.2, 0, "rgb"), image_classifier(1), images)
    with pytest.raises(tfjoint.errors.DataError, match=r"--image_size=16x16 and --color_mode=rgb"):
        datasets.check_against_model(datasets.load_data(images, (12, 12), 0.2, 0, "grayscale"), image_classifier(3),
                                     images)
    with pytest.raises(tfjoint.errors.ConfigError, match=r"is a folder of images: give --image_size"):
        datasets.load_data(images, None, 0.2, 0, "rgb")


_USER_LAYERS = '''
import keras


@keras.saving.register_keras_serializable(package="{package}")
class Twice(keras.layers.Layer):
    def call(self, x):
        return x * 2.0
'''


@pytest.mark.parametrize("how", ["a .py file", "a module name"])
def test_imports_registers_the_users_custom_layers_so_their_model_file_loads(how, tmp_path, monkeypatch):
    """--imports: the command imports what the user names (their code, named on the command line) before loading;
    a file naming a class nobody registered is refused with that advice."""
    import keras as keras3

    package = "test_app_imports_" + ("file" if how.endswith("file") else "module")
    (tmp_path / f"{package}.py").write_text(_USER_LAYERS.format(package=package))
    monkeypatch.chdir(tmp_path)
    spec = f"{package}.py" if how == "a .py file" else package
    assert pipeline.import_user_modules(f" {spec} ,") == [package]
    twice = keras3.saving.get_registered_object(f"{package}>Twice")
    inputs = keras3.Input((4,))
    keras3.Model(inputs, keras3.layers.Dense(2)(twice()(inputs))).save(str(tmp_path / "model.keras"))
    model = pipeline._load_float_model(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(model.predict(np.ones((1, 4), np.float32), verbose=0).shape, (1, 2))
    del keras3.saving.get_custom_objects()[f"{package}>Twice"]  # as in a process that did not import it
    with pytest.raises(tfjoint.errors.UnsafeFileError, match="--imports=your_module"):
        pipeline._load_float_model(str(tmp_path / "model.keras"))


def test_imports_of_a_module_that_fails_names_the_flag_and_the_module(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(tfjoint.errors.DataError, match="--imports: importing 'no_such_module_here' failed"):
        pipeline.import_user_modules("no_such_module_here")
    (tmp_path / "broken.py").write_text("raise RuntimeError('my bug')\n")
    with pytest.raises(tfjoint.errors.DataError, match="broken.py.*RuntimeError: my bug"):
        pipeline.import_user_modules("broken.py")


def test_residual_sparsity_reaches_the_schedule_and_is_refused_beside_a_budget():
    from tfjoint.prune.allocation import SparsityPlan

    uniform = SparsityPlan({}, method="uniform", target=0.0, sizes={})
    assert pipeline._schedule(RunConfig(residual_sparsity=0.5), 100, uniform, None).residual_sparsity == 0.5
    assert pipeline._schedule(RunConfig(), 100, uniform, None).residual_sparsity == 0.0
    with pytest.raises(tfjoint.ConfigError, match="--residual_sparsity=0.5 and a budget"):
        RunConfig(target="micro", flash_kb=20, residual_sparsity=0.5)
    with pytest.raises(tfjoint.ConfigError, match="residual_sparsity"):
        RunConfig(residual_sparsity=1.5)
    with pytest.raises(tfjoint.ConfigError, match="`residual_sparsity` must be in"):
        tfjoint.JointSchedule(0.5, residual_sparsity=-0.1)
