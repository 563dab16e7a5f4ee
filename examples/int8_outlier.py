"""When int8 loses accuracy: find the layer that did it.

    python examples/int8_outlier.py [--out DIR]

A trained digits CNN gets one ReLU unit of its `fc1` Dense layer pushed to
about 5000 (a huge bias), a unit the next layer ignores: the float model is
exactly as accurate as before. Its int8 file collapses: activations are
quantized per tensor, so that one unit's range takes the whole int8 grid of
`fc1`'s output and every other unit is rounded to nothing. The report's
`per_layer_error` names `fc1` first; its whole-tensor SQNR looks fine (the big
unit dominates the energy), its per-channel SQNR shows the problem.
"""

import argparse
import os

import tf_keras as keras

import tfjoint
from tfjoint.app import digits, plots


def main(out: str, float_epochs: int = 15) -> tfjoint.ExportReport:
    os.makedirs(out, exist_ok=True)
    data = digits.load_digits(seed=0)
    trained = digits.train_float_model(data, epochs=float_epochs)
    broken = keras.models.clone_model(trained)
    broken.set_weights(trained.get_weights())
    kernel, bias = broken.get_layer("fc1").get_weights()
    bias[5] = 5000.0
    broken.get_layer("fc1").set_weights([kernel, bias])
    kernel, bias = broken.get_layer("classes").get_weights()
    kernel[5, :] = 0.0  # the next layer ignores that unit: the float model is unchanged
    broken.get_layer("classes").set_weights([kernel, bias])

    try:
        report = tfjoint.export_tflite(broken, os.path.join(out, "outlier.tflite"),
                                       representative_data=data["x_calib"],
                                       validation_data=(data["x_val"], data["y_val"]), float_model=broken)
    except tfjoint.ValidationError as error:  # expected: int8 lost too much, nothing was written
        report = error.report
    print(f"float accuracy: {report.float_accuracy:.4f} (the float model is unchanged); "
          f"int8: {report.int8_accuracy:.4f}")
    print(report.worst_layers_table())
    plots.per_layer_error(os.path.join(out, "per_layer_error.png"), report.per_layer_error,
                          [layer.name for layer in broken.layers])
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples_out")
    main(parser.parse_args().out)
