"""kdedge_export: turn a kdedge training run into a kdedge bundle (docs/bundle.md) for kdedge-run.

    from kdedge_export import export_run
    manifest = export_run("runs/cnn", "bundles/cnn", formats=("onnx", "tflite"), quantize="int8")

TensorFlow and the converters load on the first export, not on import.
"""
from __future__ import annotations

from .errors import ExportError

__all__ = ["export_run", "ExportError"]


def export_run(run_dir, out_dir, formats=("onnx",), quantize: str = "none", model: str | None = None,
               vectors_dtype: str | None = None, force: bool = False, thresholds_file=None,
               label_descriptions=None, test_data=None, intended_use=None, log=None) -> dict:
    """Export a run's selected (default), distilled (`model="kd"`) or plain student as a bundle; returns the manifest.

    See `kdedge_export.exporter.export_run` for the arguments.
    """
    from .exporter import export_run as _export_run

    return _export_run(run_dir, out_dir, formats=formats, quantize=quantize, model=model,
                       vectors_dtype=vectors_dtype, force=force, thresholds_file=thresholds_file,
                       label_descriptions=label_descriptions, test_data=test_data, intended_use=intended_use,
                       log=log)
