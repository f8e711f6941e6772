"""Artifacts: the output folder (its layout and file names in `layout`), reading a finished run back, its model
card, publishing it to a hub, and exporting it (plain Transformers or ONNX)."""
