"""Planning for a device: which channels (and weight bits) to remove so the int8 file meets flash, RAM and MACs.

`budget` holds the values (`Budget`, `CompressionPlan`; plain Python that any
stage may read). The planner comes after export in the data flow because its
cost model is the export's own machinery (one conversion, the flatbuffer read
back, TFLM's planner and arena), run before training:
`plan_for_budget` -> `prepare(model, plan)`.
"""
