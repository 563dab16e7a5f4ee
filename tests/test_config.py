"""Argument checks happen before anything is built, with messages naming the argument."""

import pytest

import tfjoint
from tfjoint.config import JointConfig

from conftest import small_cnn


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(target_sparsity=1.0, end_step=100), "target_sparsity"),
        (dict(target_sparsity=-0.1, end_step=100), "target_sparsity"),
        (dict(target_sparsity=0.5, end_step=100, begin_step=100), "end_step"),
        (dict(target_sparsity=0.5, end_step=100, begin_step=-10), "begin_step"),
        (dict(target_sparsity=0.5, end_step=-5), "end_step"),
        (dict(target_sparsity=0.5, end_step=100, frequency=0), "frequency"),
        (dict(target_sparsity=0.5, end_step=100, quant_start_step=-1), "quant_start_step"),
        (dict(target_sparsity=0.5, end_step=150, frequency=100), r"end_step=100|multiple of `frequency`"),
        (dict(target_sparsity=0.5, end_step=100, initial_sparsity=0.6), "initial_sparsity"),
        (dict(target_sparsity="0.5", end_step=100), "target_sparsity"),
    ],
)
def test_bad_arguments_raise_before_building(kwargs, match):
    # A Keras 3 / wrong object as model proves the config is checked first.
    with pytest.raises(tfjoint.ConfigError, match=match):
        tfjoint.prepare(object(), **kwargs)


def test_config_round_trips_every_field():
    config = JointConfig(target_sparsity=0.7, end_step=300, begin_step=100, initial_sparsity=0.1, power=2.0,
                         frequency=50, quant_start_step=20, prune_depthwise=True)
    assert JointConfig.from_dict(config.to_dict()) == config


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(tfjoint.ConfigError, match="unknown JointConfig fields"):
        JointConfig.from_dict({"target_sparsity": 0.5, "end_step": 100, "sparsity": 0.3})


def test_config_errors_are_value_errors():
    with pytest.raises(ValueError):
        tfjoint.prepare(small_cnn(), target_sparsity=2.0, end_step=100)


def test_polynomial_decay_kwargs_build_tfmot_schedule():
    import tensorflow_model_optimization as tfmot

    config = JointConfig(target_sparsity=0.7, end_step=300, begin_step=100, frequency=50)
    schedule = tfmot.sparsity.keras.PolynomialDecay(**config.polynomial_decay_kwargs())
    assert float(schedule(300)[1]) == pytest.approx(0.7) and bool(schedule(150)[0])
