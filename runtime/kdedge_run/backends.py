"""Inference backends: ONNX Runtime and LiteRT (TFLite), imported only when used."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading

import numpy as np

from .bundle import Bundle, BundleError
from .text import input_shape

ONNX_BATCH = 64
BATCH_INPUT_FLOATS = 1 << 24  # an ONNX batch holds at most this many input floats (64 MiB)
_MODULES = {"onnx": "onnxruntime", "tflite": "ai_edge_litert"}
_INSTALL = {"onnx": "pip install onnxruntime", "tflite": "pip install 'kdedge-run[tflite]'"}


class OnnxBackend:
    """One onnxruntime session on the CPU; `run` is thread-safe (as InferenceSession.run is)."""

    name = "onnx"
    batch_size = ONNX_BATCH

    def __init__(self, path: str, entry: dict, threads: int, text_floats: int, n_labels: int):
        import onnxruntime as ort

        self.threads = threads
        self.batch_size = max(1, min(ONNX_BATCH, BATCH_INPUT_FLOATS // text_floats))

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise BundleError(f"{entry['file']}: onnxruntime cannot load the model: {e}") from e
        inputs = self._session.get_inputs()
        outputs = {o.name: o for o in self._session.get_outputs()}
        if [i.name for i in inputs] != [entry.get("input_name")]:
            raise BundleError(f"{entry['file']}: model inputs {[i.name for i in inputs]}, manifest "
                              f"input_name is {entry.get('input_name')!r}")
        _check_dims(entry["file"], "input", inputs[0].shape, entry["input_shape"])
        self._input = inputs[0].name
        named = output_names(entry)
        self._keys = list(named)
        self._outputs = list(named.values())
        missing = [n for n in self._outputs if n not in outputs]
        if missing:
            raise BundleError(f"{entry['file']}: no output named {missing[0]!r} "
                              f"(model outputs: {sorted(outputs)})")
        for role, shape in (("logits", [None, n_labels]), ("probabilities", [None, n_labels]), ("known", [None])):
            if role in named:
                _check_dims(entry["file"], f"output {named[role]}", outputs[named[role]].shape, shape,
                            "[batch, labels]" if role != "known" else "[batch]")
        if isinstance(inputs[0].shape[0], int):
            if inputs[0].shape[0] != 1:
                raise BundleError(f"{entry['file']}: input batch must be dynamic or 1, "
                                  f"found {inputs[0].shape[0]}")
            self.batch_size = 1
        if entry.get("precision") == "int8":
            # dynamic quantisation scales activations per batch: one text at a time keeps a text's
            # probabilities independent of the other texts it is predicted with
            self.batch_size = 1
        self.has_attention = "attention" in named

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A batch of model inputs → its outputs by role ("logits" or "probabilities", "known", "attention")."""
        return dict(zip(self._keys, self._session.run(self._outputs, {self._input: x})))


def output_names(entry: dict) -> dict[str, str]:
    """Output role → ONNX output name: version 1 {logits[, attention]}, version 2 {probabilities, known[,
    attention]} (docs/bundle.md "Models")."""
    if "outputs" in entry:
        return {k: v for k, v in entry["outputs"].items() if v is not None}
    named = {"logits": entry.get("logits_name")}
    if entry.get("attention_name") is not None:
        named["attention"] = entry["attention_name"]
    return named


class TfliteBackend:
    """A LiteRT interpreter (batch 1); calls are serialised with a lock, interpreters are not thread-safe."""

    name = "tflite"
    batch_size = 1

    def __init__(self, path: str, entry: dict, threads: int, n_labels: int):
        from ai_edge_litert.interpreter import Interpreter

        self.threads = threads
        try:
            self._interpreter = Interpreter(model_path=path, num_threads=threads)
            with native_stderr_silenced():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate"
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{entry['file']}: LiteRT cannot load the model: {e}") from e
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            raise BundleError(f"{entry['file']}: {len(inputs)} inputs, expected exactly one")
        _check_dims(entry["file"], "input", list(inputs[0]["shape"]), entry["input_shape"])
        if inputs[0]["shape"][0] != 1:
            raise BundleError(f"{entry['file']}: input batch must be 1, found {list(inputs[0]['shape'])}")
        self._input = inputs[0]["index"]
        outputs = self._interpreter.get_output_details()
        main = "probabilities" if "outputs" in entry else "logits"
        found = {main: [o for o in outputs if list(o["shape"]) == [1, n_labels] and o["dtype"] == np.float32]}
        if main == "probabilities":
            found["known"] = [o for o in outputs if list(o["shape"]) == [1] and o["dtype"] == np.int32]
        if any(len(v) != 1 for v in found.values()) or len(outputs) > len(found) + 1:
            raise BundleError(f"{entry['file']}: cannot identify the {main} output by shape [1, {n_labels}] "
                              f"(float32{'; known [1] int32' if main == 'probabilities' else ''}) among "
                              f"{[[int(d) for d in o['shape']] for o in outputs]}")
        self._outputs = {k: v[0]["index"] for k, v in found.items()}
        others = [o for o in outputs if o["index"] not in self._outputs.values()]
        if others:
            self._outputs["attention"] = others[0]["index"]
        self.has_attention = bool(others)
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A batch of model inputs → its outputs by role, one invoke per row."""
        rows: dict[str, list] = {k: [] for k in self._outputs}
        with self._lock:
            for row in x:
                self._interpreter.set_tensor(self._input, np.ascontiguousarray(row[None]))
                self._interpreter.invoke()
                for key, index in self._outputs.items():
                    rows[key].append(self._interpreter.get_tensor(index).copy())
        return {k: np.concatenate(v) for k, v in rows.items()}


@contextlib.contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block: native libraries print there, not to sys.stderr.

    Errors still surface as Python exceptions; a process whose stderr has no file descriptor is left as is.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # e.g. a StringIO under a test runner
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _check_dims(file: str, what: str, actual, declared, source: str = "manifest input_shape") -> None:
    """Compare a model's tensor shape with the one `source` declares (None/symbolic dims match anything)."""
    ok = len(actual) == len(declared) and all(
        not isinstance(a, (int, np.integer)) or d is None or int(a) == d for a, d in zip(actual, declared))
    if not ok:
        raise BundleError(f"{file}: model {what} shape {[_dim(a) for a in actual]} does not match "
                          f"{source} {declared}")


def _dim(a):
    return int(a) if isinstance(a, (int, np.integer)) else None


def available(fmt: str) -> bool:
    """Whether the runtime library for a model format can be imported."""
    return importlib.util.find_spec(_MODULES[fmt]) is not None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def open_backend(bundle: Bundle, backend: str | None = None, threads: int = 1):
    """Open the bundle's model with `backend` ("onnx"/"tflite"), or the best available one.

    `threads` (a positive int) above `usable_cores()` is clamped to it.
    """
    models = bundle.models()
    if backend is None:
        usable = [f for f in models if available(f)]  # the manifest lists models in preference order
        if not usable:
            raise BundleError(f"{bundle.path}: no usable model: bundle has {sorted(models)}; "
                              f"install onnxruntime or ai-edge-litert")
        backend = usable[0]
    elif backend not in _MODULES:
        raise BundleError(f"unknown backend {backend!r} (expected 'onnx' or 'tflite')")
    elif backend not in models:
        raise BundleError(f"{bundle.path}: bundle has no {backend} model (it has {sorted(models)})")
    elif not available(backend):
        raise BundleError(f"{models[backend]['file']}: {_MODULES[backend]} is not installed "
                          f"({_INSTALL[backend]})")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    threads = min(threads, usable_cores())
    entry = models[backend]
    path = str(bundle.path / entry["file"])
    n_labels = len(bundle.labels)
    shape = model_input_shape(bundle)
    if backend == "onnx":
        per_text = int(np.prod(shape)) * (1 if bundle.version == 2 else bundle.manifest["embeddings"]["dim"])
        impl = OnnxBackend(path, entry, threads, per_text, n_labels)
    else:
        impl = TfliteBackend(path, entry, threads, n_labels)
    _probe(impl, bundle, entry)
    return impl


def model_input_shape(bundle: Bundle) -> tuple[int, ...]:
    """The per-text model input shape: version 1 the id shape, version 2 `[max_len]` code points."""
    if bundle.version == 2:
        return (bundle.input_spec["max_len"],)
    return input_shape(bundle.input_spec)


def probe_inputs(bundle: Bundle) -> list[tuple[str, np.ndarray]]:
    """An all-padding input and one without padding: (what, model input batch of 1)."""
    shape = model_input_shape(bundle)
    size = int(np.prod(shape))
    if bundle.version == 2:
        text = (0x4E00 + np.arange(size) % 0x5000).reshape(1, *shape).astype(np.int32)  # CJK ideographs
        return [("an all-padding input", np.zeros((1, *shape), np.int32)), ("an input of CJK code points", text)]
    ids = 1 + np.arange(size).reshape(1, *shape) % (bundle.vectors.shape[0] - 1)  # no <pad>
    return [("an all-padding input", np.zeros((1, *shape, bundle.manifest["embeddings"]["dim"]), np.float32)),
            ("an input of vocabulary rows", bundle.embed(ids))]


def _probe(impl, bundle: Bundle, entry: dict) -> None:
    """Run an all-padding input and one of real tokens; check output shapes and finiteness.

    The second input catches a model that is finite only on zeros; a model that fails on other
    inputs is caught per prediction (Classifier refuses non-finite outputs).
    """
    shape = model_input_shape(bundle)
    n = len(bundle.labels)
    for what, x in probe_inputs(bundle):
        try:
            out = impl.run(x)
        except Exception as e:  # a runtime failure here means the model does not fit the manifest
            raise BundleError(f"{entry['file']}: test inference failed: {e}") from e
        kind = "probabilities" if "probabilities" in out else "logits"
        main = out[kind]
        if main.shape != (1, n):
            raise BundleError(f"{entry['file']}: {kind} shape {list(main.shape)}, expected [1, {n}] "
                              f"(one per label)")
        with np.errstate(all="ignore"):
            values = main.astype(np.float64) / (1.0 if kind == "probabilities" else bundle.temperatures)
        if not np.isfinite(values).all():
            raise BundleError(f"{entry['file']}: test inference gave NaN or infinite {kind} (on {what})")
        if kind == "probabilities" and not ((values >= 0) & (values <= 1)).all():
            raise BundleError(f"{entry['file']}: test inference gave probabilities outside [0, 1] (on {what})")
        if kind == "probabilities" and main.dtype != np.float32:
            raise BundleError(f"{entry['file']}: probabilities dtype {main.dtype}, expected float32")
        if "known" in out:
            known = out["known"]
            if known.shape != (1,) or known.dtype != np.int32:
                raise BundleError(f"{entry['file']}: 'known' output {known.dtype} {list(known.shape)}, expected "
                                  "int32 [1]")
            if not 0 <= int(known[0]) <= np.count_nonzero(x):
                raise BundleError(f"{entry['file']}: test inference gave known {int(known[0])}, outside [0, "
                                  f"{np.count_nonzero(x)}] (the code points read, on {what})")
        attention = out.get("attention")
        if attention is not None and attention.shape != (1, *shape):
            raise BundleError(f"{entry['file']}: attention shape {list(attention.shape)}, expected "
                              f"{[1, *shape]}")
