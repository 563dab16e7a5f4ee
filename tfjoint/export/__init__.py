"""Export: a prepared or float model -> a validated, fully int8 .tflite and its report.

A module per stage, in the order data flows through them; each stage's
function returns a frozen value carrying its own notes, and `tflite.export_tflite`
runs them in sequence and writes (or refuses) the file:

    options       `ExportOptions`: everything but the model, the path and the data (with `validate.Tolerances`)
    arguments     every argument checked before any slow work
    source        what is converted (a prepared model stripped here)
    candidates    one file per quantization, converted and read back once
    validation    each file in each runtime (`runtime`: LiteRT; `tflm`: TensorFlow Lite Micro), budgets, the choice
    measurements  the shipped file: `memory`, MACs, `explain` (per-layer error), latency
    report        `ExportReport`, assembled once from the stage values

`measure` holds the numpy-only measurements; `micro` writes the C array TFLM links.
"""
