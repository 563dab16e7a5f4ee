"""Export: a prepared or float model -> a validated, fully int8 .tflite and its report.

A module per stage, in the order data flows through them; each stage's
function returns a frozen value carrying its own notes (`tfjoint.findings`),
and `export_tflite.export_tflite` runs them in sequence and writes (or
refuses) the file:

    options       `ExportOptions` and `Tolerances`: everything but the model, the path and the data
    arguments     every argument checked before any slow work; the model's kind found once
    source        what is converted (a prepared model stripped here)
    candidates    one file per quantization, converted and read back once
    compression   TFLM's LUT compression of shared weights
    validation    each file in each runtime (LiteRT, TensorFlow Lite Micro; `compare` holds the comparisons),
                  budgets, and the file to ship, chosen on evidence
    measurements  the shipped file: `memory` (flash, RAM), MACs, `explain` (per-layer error), latency
    report        `ExportReport`, assembled once from the stage values

`micro` writes the C array TFLM links. Running a file lives in `tfjoint.tflite`.
"""
