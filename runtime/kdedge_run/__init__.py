"""kdedge-run: classify Chinese text with a kdedge bundle, without TensorFlow.

    import kdedge_run
    clf = kdedge_run.load("path/to/bundle")
    clf.predict("今天股市大涨").labels

Heavy modules (numpy, onnxruntime, jieba) load on first use, not on import.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load", "Classifier", "Prediction", "BundleError", "InputError"]


def load(path=None, backend: str | None = None, threads: int = 1, verify_golden: bool = True):
    """Load and verify a bundle directory (default: the bundle shipped in the package) → Classifier.

    `backend` is "onnx" or "tflite" (default: the first model of the manifest whose library is
    installed — the exporter lists the faster one first); `threads` sets the backend's intra-op threads.
    The bundle's golden vectors are run through the loaded model and compared (a few ms per text);
    `verify_golden=False` skips that for a caller that has verified this bundle once already.
    """
    from .classifier import Classifier

    return Classifier(path, backend=backend, threads=threads, verify_golden=verify_golden)


def __getattr__(name: str):
    if name in ("Classifier", "Prediction", "InputError"):
        from . import classifier

        return getattr(classifier, name)
    if name == "BundleError":
        from .bundle import BundleError

        return BundleError
    raise AttributeError(f"module 'kdedge_run' has no attribute {name!r}")
