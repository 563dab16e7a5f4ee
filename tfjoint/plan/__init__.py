"""Planning for a device: which channels to remove so the int8 file meets flash, RAM and compute budgets.

This stage comes after export in the data flow because its cost model is the
export's own machinery (one conversion, the flatbuffer read back, TFLM's
planner and arena), run before training: `plan_for_budget` -> `prepare(plan=...)`.
"""
