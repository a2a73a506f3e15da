"""The choices of `kdedge export`'s options, in one place: the CLI offers them and the exporter checks them.
Light on purpose (no numpy, no TensorFlow), so `kdedge --help` stays fast."""
from __future__ import annotations

FORMATS = ("onnx", "tflite")                 # model file formats; "all" on the command line = every one
QUANTIZE = ("none", "int8", "fp16")
PRECISION = {"none": "fp32", "int8": "int8", "fp16": "fp16"}         # --quantize → the models' precision
DTYPES = ("float32", "float16", "int8")      # storage of the vectors table
DEFAULT_FOR_QUANTIZE = {"none": "float32", "int8": "int8", "fp16": "float16"}  # --quantize → default dtype
MODEL_KINDS = ("kd", "student")              # which student of a run (`kdedge train` selects one by default)
