"""Training: prepare a float model, fit it with callbacks, read it back, strip it, save and load it.

`prepare` builds the model whose quantizers prune and fake-quantize in one
fit; `callbacks` reports the schedule while it trains; `readback` reads a
prepared model back (its kernels, masks, step, schedule); `strip` removes the
pruning machinery and pruned channels.
"""
