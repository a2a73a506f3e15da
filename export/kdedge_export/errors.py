"""The one exception kdedge export raises for expected failures."""
from __future__ import annotations

from kdedge.errors import KdedgeError


class ExportError(KdedgeError, ValueError):
    """An export cannot be done as asked; the message says why. Nothing is written under the final name.

    A KdedgeError, so the `kdedge` CLI reports it as `kdedge: error: …` with exit code 2.
    """
