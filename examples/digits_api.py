"""The Python API end to end on scikit-learn's bundled handwritten digits.

    python examples/digits_api.py [--out DIR]

Trains a small float CNN, then prunes it to 80% sparsity and trains it
quantization-aware in ONE fit, strips the pruning machinery, and exports a
fully int8 .tflite validated in LiteRT against the float model.
"""

import argparse
import os

import numpy as np
import tf_keras as keras

import tfjoint  # import before TensorFlow: selects Keras 2 (tf_keras) for TF-MOT
from tfjoint.app import digits


def main(out: str, float_epochs: int = 15, epochs: int = 10, max_accuracy_drop: float = 0.02) -> tfjoint.ExportReport:
    os.makedirs(out, exist_ok=True)
    data = digits.load_digits(seed=0)

    # 1. An ordinary float model, trained as usual.
    float_model = digits.train_float_model(data, epochs=float_epochs)

    # 2. Wrap it: magnitude pruning on TF-MOT's PolynomialDecay schedule and
    #    8-bit fake quantization, both driven by the same training steps.
    #    The schedule reaches 80% halfway through fine-tuning, then recovers.
    steps = epochs * int(np.ceil(len(data["x_train"]) / 32))
    schedule = tfjoint.inspect.plan_schedule(steps, target_sparsity=0.8, prune_end=0.5)
    joint = tfjoint.prepare(float_model, schedule)

    # 3. One compile, one fit. tfjoint.callbacks() adds tfjoint/* metrics to the logs.
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    joint.fit(data["x_train"], data["y_train"], batch_size=32, epochs=epochs, verbose=2,
              callbacks=tfjoint.callbacks(log_dir=os.path.join(out, "logs")))

    # 4. Remove the pruning state (the zeros stay in the weights), keep QAT.
    deployable = tfjoint.strip(joint)

    # 5. Convert to a fully int8 flatbuffer and validate it in the LiteRT runtime.
    report = tfjoint.export_tflite(deployable, os.path.join(out, "digits_int8.tflite"),
                                   representative_data=data["x_calib"], validation_data=(data["x_val"], data["y_val"]),
                                   float_model=float_model,
                                   options=tfjoint.ExportOptions(measure_latency=True,
                                                                 tolerances=tfjoint.Tolerances(max_accuracy_drop=max_accuracy_drop)))
    print(report)
    report.save_json(os.path.join(out, "digits_report.json"))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples_out")
    main(parser.parse_args().out)
