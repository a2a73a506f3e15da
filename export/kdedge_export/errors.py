"""The exceptions kdedge export raises for expected failures: one base class and one subclass per kind of
failure, so a caller (a CI job, a notebook) can tell a bad run from a bad option or a conversion that missed
the parity tolerance without reading messages."""
from __future__ import annotations

from kdedge.errors import KdedgeError


class ExportError(KdedgeError, ValueError):
    """An export cannot be done as asked; the message says why. Nothing is written under the final name.

    A KdedgeError, so the `kdedge` CLI reports it as `kdedge: error: …` with exit code 2.
    """


class RunDirectoryError(ExportError):
    """The run directory, or a file in it, is missing, malformed or inconsistent with its siblings."""


class OptionError(ExportError):
    """An option of the export, or a file or folder it names (--out, --thresholds, --label-descriptions,
    --test-data), cannot be used as given."""


class ShapeError(ExportError):
    """The trained model does not fit the run's vocabulary or labels, or the body rebuilt for export does not
    take the trained weights."""


class ConversionError(ExportError):
    """A converter (tf2onnx, the TFLite converter, the ONNX quantiser) failed or produced an unexpected graph."""


class ParityError(ExportError):
    """An fp32 model with fp32 vectors gives probabilities further than `tolerance` from the Keras model's on the
    run's validation texts. `rows`: the measured parity rows (docs/bundle.md "Parity") that missed it."""

    def __init__(self, message: str, tolerance: float, rows: list[dict]):
        super().__init__(message)
        self.tolerance = tolerance
        self.rows = rows


class VerificationError(ExportError):
    """The staged or finished bundle does not load or verify in kdedge_run, the reader users run."""
