"""From a device's budgets to firmware files: flash, RAM and time in, a model validated in TFLM out.

    python examples/microcontroller_budget.py [--out DIR] [--flash_kb 48] [--ram_kb 8] [--mmacs 0.25]

A microcontroller developer knows what the part allows (flash for the model,
RAM for the tensor arena, cycles per inference), not which sparsity to ask
for. This example:

1. plans which channels to remove from each layer group so the int8 file
   meets the budgets (`tfjoint.plan_for_budget`: a cost model made from one
   conversion, and a sensitivity scan on validation data);
2. prunes those channels and trains quantization-aware, in one fit
   (unstructured weight sparsity would shrink a compressed download, not the
   flash or RAM TFLM uses, so the plan has none);
3. exports, validating the int8 file in the TensorFlow Lite Micro
   interpreter itself (`runtimes=("tflm",)`) and checking the file's flash,
   the arena TFLM allocates and the MACs against the budget;
4. writes `model_data.h` / `model_data.cc` with `kTensorArenaSize` set to the
   arena TFLM measured.
"""

import argparse
import os

import tf_keras as keras

import tfjoint  # import before TensorFlow: selects Keras 2 (tf_keras) for TF-MOT
from tfjoint.app import digits


def main(out: str, flash_kb: float = 48, ram_kb: float = 8, mmacs: float = 0.25, float_epochs: int = 15,
         epochs: int = 10, max_accuracy_drop: float = 0.03) -> tfjoint.ExportReport:
    os.makedirs(out, exist_ok=True)
    data = digits.load_digits(seed=0)
    float_model = digits.train_float_model(data, epochs=float_epochs)
    budget = tfjoint.Budget(flash_bytes=int(flash_kb * 1024), ram_bytes=int(ram_kb * 1024), macs=int(mmacs * 1e6))

    # 1. Budgets -> channels to remove per layer group (raises, naming the smallest reachable figure, if none can).
    plan = tfjoint.plan_for_budget(float_model, budget, validation_data=(data["x_val"], data["y_val"]))
    print(plan)

    # 2. One fit: the planned channels go over the first half of it, with QAT throughout (and prepare's check
    # allocates the file in TFLM before training).
    joint = tfjoint.prepare(float_model, plan, check="tflm")
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    joint.fit(data["x_train"], data["y_train"], batch_size=32, epochs=epochs, verbose=2)

    # 3. Validated where it will run: the TFLM interpreter (reference int8 kernels, as on the MCU).
    options = tfjoint.ExportOptions(runtimes=("tflm",), budget=budget,
                                    tolerances=tfjoint.Tolerances(max_accuracy_drop=max_accuracy_drop))
    report = tfjoint.export_tflite(tfjoint.strip(joint), os.path.join(out, "model.tflite"),
                                   representative_data=data["x_calib"], validation_data=(data["x_val"], data["y_val"]),
                                   float_model=float_model, options=options)
    print(report)
    report.save_json(os.path.join(out, "report.json"))

    # 4. Firmware files: the model as a C array, and the memory TFLM needs for it (as measured).
    tfjoint.write_c_array(report.tflite_path, out, **report.device_memory)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples_out")
    parser.add_argument("--flash_kb", type=float, default=48)
    parser.add_argument("--ram_kb", type=float, default=8)
    parser.add_argument("--mmacs", type=float, default=0.25)
    args = parser.parse_args()
    main(args.out, args.flash_kb, args.ram_kb, args.mmacs)
