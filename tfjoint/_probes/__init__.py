"""Programs tfjoint runs in a child process (`python -m tfjoint._probes.<name>`), each a module of its own.

They import neither TensorFlow nor the rest of tfjoint: a probe measures one
runtime (LiteRT or TensorFlow Lite Micro) alone, so that what it measures is
that runtime's, and a crash in it (TFLM on too small an arena) cannot take the
caller down.
"""
