"""kdedge_export: turn a kdedge training run into a kdedge bundle (docs/bundle.md) for kdedge-run.

    from kdedge_export import export_run
    manifest = export_run("runs/cnn", "bundles/cnn", formats=("onnx", "tflite"), quantize="int8")

TensorFlow and the converters load on the first export, not on import.
"""
from __future__ import annotations

from .errors import (ConversionError, ExportError, OptionError, ParityError, RunDirectoryError, ShapeError,
                     VerificationError)
from .exporter import export_run  # TensorFlow and the converters are imported inside, when a run is exported

__all__ = ["export_run", "ExportError", "RunDirectoryError", "OptionError", "ShapeError", "ConversionError",
           "ParityError", "VerificationError"]
