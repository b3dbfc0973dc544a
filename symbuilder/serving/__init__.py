"""Serving-side use of checkpoints and export folders, one module per job: legacy (any Module
checkpoint to a verified ONNX file: `symbuilder export`), predict (`symbuilder predict`),
audit (`symbuilder verify`: an export folder against its manifest) and samples (the CSV and
array readers they share). Import the module you need: the CLI imports them lazily.
"""
