"""MobileNetV2 (random init, 96x96) through prepare -> a few fit steps -> export.

    python examples/mobilenet_v2.py [--out DIR] [--steps N]

Shows tfjoint on a real architecture: DepthwiseConv2D (quantized; pruned only
with prune_depthwise=True), Conv2D+BatchNorm+ReLU6 folded by TF-MOT's layout
transforms, residual Adds. No pretrained weights are downloaded
(`weights=None`); the images are synthetic, so accuracy is meaningless here.
It is about structure, size and speed, not about learning.
"""

import argparse
import os

import numpy as np
import tf_keras as keras

import tfjoint


def main(out: str, steps: int = 20, alpha: float = 0.35, size: int = 96, check: bool = True,
         quantization: str = "auto", compare_float: bool = True) -> tfjoint.ExportReport:
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(0)
    float_model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, weights=None, classes=10)
    rng = np.random.default_rng(0)
    x = rng.random((steps * 8, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 10, len(x))

    # check=True (the default) converts once before training, so a layer the export would refuse is refused now.
    joint = tfjoint.prepare(float_model, tfjoint.JointSchedule(0.5, end_step=steps // 2, frequency=1), check=check)
    joint.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=8, epochs=1, verbose=2, callbacks=tfjoint.callbacks())

    report = tfjoint.export_tflite(joint, os.path.join(out, "mobilenet_v2_int8.tflite"), representative_data=x[:16],
                                   validation_data=x[:64], float_model=float_model if compare_float else None,
                                   # Random weights on random images leave near-uniform softmax outputs: the gate
                                   # leaves out the ties int8's 1/256 grid cannot order (a note counts them).
                                   options=tfjoint.ExportOptions(measure_latency=True, quantization=quantization))
    print(report)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples_out")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    main(args.out, steps=args.steps)
