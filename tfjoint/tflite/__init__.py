"""TFLite files: a Keras model converted to flatbuffer bytes (`convert`), and the bytes read back (`flatbuffer`).

An early stage because two later ones need it: `prepare` converts the
prepared model once to refuse, before training, what the export would refuse;
`export_tflite` converts the trained one.
"""
