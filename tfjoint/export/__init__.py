"""Export: a prepared or float model -> a validated, fully int8 .tflite and its report.

One module per stage, in the order data flows through them (`tflite.export_tflite`
runs them in sequence):

    convert   model -> flatbuffer bytes (TFLiteConverter)
    inspect   the bytes read back once through LiteRT: ops, dtypes, int8 weights, I/O quantization
    validate  `Tolerances` and the comparisons of LiteRT's outputs with Keras and the float model
    report    `ExportReport`, as a table and as JSON

`runtime` runs a flatbuffer in LiteRT; `measure` holds the numpy-only measurements.
"""
