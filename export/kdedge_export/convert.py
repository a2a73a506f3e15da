"""Keras body → ONNX (tf2onnx, opset 17) and TFLite (builtin ops, batch 1); int8 / fp16 variants.

The body takes the *embedded* float32 tensor and returns {"logits"[, "attention"]}; the runtime
embeds the ids itself (docs/bundle.md, "Models").
"""
from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .errors import ConversionError, OptionError, ShapeError

OPSET = 17
INPUT_NAME = "embedded"
LOGITS = "logits"
ATTENTION = "attention"
PRECISIONS = ("fp32", "int8", "fp16")


@dataclass
class Converted:
    """One model file in memory, with what its manifest entry says about it."""

    format: str                     # onnx | tflite
    precision: str                  # fp32 | int8 | fp16
    data: bytes
    input_shape: list
    input_name: str
    logits_name: str
    attention_name: str | None

    @property
    def file(self) -> str:
        return f"model.{self.format}"

    def entry(self) -> dict:
        """The manifest `models` entry."""
        return {"format": self.format, "file": self.file, "precision": self.precision,
                "input_shape": list(self.input_shape), "input_name": self.input_name,
                "logits_name": self.logits_name, "attention_name": self.attention_name}


def _quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("tf2onnx", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def body_input_shape(body) -> tuple:
    """The embedded input shape without the batch axis, e.g. (128, 300) or (8, 40, 300)."""
    return tuple(int(d) for d in body.inputs[0].shape[1:])


def _output_keys(body) -> list[str]:
    keys = list(body.output) if isinstance(body.output, dict) else []
    if LOGITS not in keys:
        raise ShapeError(f"the model body must output a dict with '{LOGITS}' (kdedge.networks.models), "
                         f"got {body.output!r}")
    return keys


# --- ONNX ------------------------------------------------------------------------------------------

def to_onnx(body, log: Callable[[str], None]) -> Converted:
    """fp32 ONNX of the body with a dynamic batch; outputs named "logits" (and "attention")."""
    _quiet()
    import tensorflow as tf
    import tf2onnx

    shape = body_input_shape(body)
    keys = _output_keys(body)
    spec = (tf.TensorSpec([None, *shape], tf.float32, name=INPUT_NAME),)
    try:
        proto, _ = tf2onnx.convert.from_keras(body, input_signature=spec, opset=OPSET)
        names = _keras_output_names(body, keys)
    except Exception as e:  # tf2onnx's Keras 3 support breaks in version-specific ways
        log(f"tf2onnx.convert.from_keras failed ({type(e).__name__}: {e}); FALLBACK: converting an "
            "exported SavedModel with tf2onnx.convert.from_function instead")
        proto = _onnx_via_saved_model(body, spec)
        names = {k: k for k in keys}
    _name_outputs(proto, names, keys)
    inputs = [i.name for i in proto.graph.input if i.name not in {x.name for x in proto.graph.initializer}]
    if inputs != [INPUT_NAME]:
        raise ConversionError(f"ONNX conversion produced inputs {inputs}, expected ['{INPUT_NAME}']")
    return Converted("onnx", "fp32", proto.SerializeToString(), [None, *shape], INPUT_NAME, LOGITS,
                     ATTENTION if ATTENTION in keys else None)


def _keras_output_names(body, keys: list[str]) -> dict[str, str]:
    """Dict key → the name from_keras gives that output (the producing layer's name)."""
    return {k: body.output[k]._keras_history.operation.name for k in keys}


def _onnx_via_saved_model(body, spec):
    import tensorflow as tf
    import tf2onnx

    with tempfile.TemporaryDirectory(prefix="kdedge-savedmodel-") as tmp:
        try:
            body.export(tmp, format="tf_saved_model", verbose=False, input_signature=list(spec))
        except TypeError:  # older Keras without verbose/input_signature
            body.export(tmp)
        loaded = tf.saved_model.load(tmp)
        serve = loaded.signatures.get("serving_default") or loaded.serve

        @tf.function(input_signature=spec)
        def forward(x):
            out = serve(x)
            return {k: tf.identity(v, name=k) for k, v in out.items()}

        try:
            proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
        except Exception as e:
            raise ConversionError(f"ONNX conversion failed with from_keras and with the SavedModel fallback: "
                                  f"{e}") from e
    return proto


def _name_outputs(proto, names: dict[str, str], keys: list[str]) -> None:
    """Rename graph outputs to the dict keys ("logits", "attention"), everywhere they are referenced."""
    outputs = [o.name for o in proto.graph.output]
    mapping = {}
    for key in keys:
        old = names.get(key)
        if old not in outputs:
            matches = [o for o in outputs if o == key or o.startswith(key) or o.endswith(key)]
            if len(matches) != 1:
                raise ConversionError(f"cannot tell which ONNX output is '{key}' among {outputs}")
            old = matches[0]
        if old != key:
            mapping[old] = key
    if not mapping:
        return
    used = _all_names(proto.graph)
    clash = [new for new in mapping.values() if new in used and new not in mapping]
    if clash:
        raise ConversionError(f"cannot rename ONNX outputs to {clash}: the names are taken inside the graph")
    _rename(proto.graph, mapping)


def _all_names(graph) -> set[str]:
    names = {i.name for i in graph.input} | {o.name for o in graph.output} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _all_names(g)
    return names


def _rename(graph, mapping: dict[str, str]) -> None:
    for o in graph.output:
        if o.name in mapping:
            o.name = mapping[o.name]
    for v in graph.value_info:
        if v.name in mapping:
            v.name = mapping[v.name]
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        for attr in node.attribute:  # subgraphs may read outer-scope tensors by name
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename(g, mapping)


def onnx_converter_common_available() -> bool:
    return importlib.util.find_spec("onnxconverter_common") is not None


def quantize_onnx(model: Converted, precision: str) -> tuple[Converted, str | None]:
    """int8: onnxruntime dynamic quantisation (QInt8 weights); fp16: onnxconverter-common if installed.

    Returns the model and a note when the precision could not be applied (fp16 without the package).
    """
    if precision == "fp32":
        return model, None
    import onnx

    if precision == "fp16":
        if not onnx_converter_common_available():
            return model, ("ONNX model kept in fp32: fp16 conversion needs onnxconverter-common, which is "
                           "not installed (pip install onnxconverter-common)")
        from onnxconverter_common import float16

        proto = float16.convert_float_to_float16(onnx.load_from_string(model.data), keep_io_types=True)
        return replace(model, precision="fp16", data=proto.SerializeToString()), None
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="kdedge-quant-") as tmp:
        src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(model.data)
        logging.disable(logging.WARNING)  # its "consider pre-processing" advice goes to the root logger
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        except Exception as e:  # onnxruntime's quantiser raises plain exceptions
            raise ConversionError(f"ONNX int8 quantisation failed: {e}") from e
        finally:
            logging.disable(logging.NOTSET)
        return replace(model, precision="int8", data=dst.read_bytes()), None


# --- TFLite ----------------------------------------------------------------------------------------

def to_tflite(body, arch: str, params: dict, dropout: float, precision: str = "fp32") -> Converted:
    """Rebuild the body with static shapes (batch 1, unrolled RNNs), copy the weights, convert with
    builtin ops only (no Flex). int8: dynamic-range weights; fp16: float16 weights."""
    _quiet()
    import tensorflow as tf

    from kdedge.networks.models import BodySpec, build_body

    if precision not in PRECISIONS:
        raise OptionError(f"unknown precision {precision!r}")
    shape = body_input_shape(body)
    keys = _output_keys(body)
    n_labels = int(body.output[LOGITS].shape[-1])
    if ATTENTION in keys and tuple(body.output[ATTENTION].shape[1:]) == (n_labels,):
        raise ConversionError(f"cannot export {arch} to TFLite: readers tell its outputs apart by shape "
                              f"(docs/bundle.md) and the attention [1, {n_labels}] has the shape of the logits "
                              f"[1, {n_labels}] (max_len equals the number of labels); export ONNX only, or "
                              "retrain with another --max-len")
    static = build_body(arch, BodySpec(shape, n_labels, params, dropout, unroll=True, batch_size=1), name="body")
    try:
        static.set_weights(body.get_weights())
    except ValueError as e:
        raise ShapeError(f"the {arch} body rebuilt for TFLite does not take the trained weights "
                         f"(architecture parameters changed?): {e}") from e
    forward = tf.function(lambda x: static(x, training=False))
    concrete = forward.get_concrete_function(tf.TensorSpec([1, *shape], tf.float32, name=INPUT_NAME))
    # the tf.function is the trackable object: passing the Keras model leaves its variables
    # uninitialised in the flatbuffer (NaN outputs with TF 2.21 / Keras 3)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], forward)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision in ("int8", "fp16"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        data = converter.convert()
    except Exception as e:  # the converter raises ConverterError and others
        raise ConversionError(f"TFLite conversion of {arch} ({precision}, builtin ops only) failed: {e}") from e
    return Converted("tflite", precision, bytes(data), [1, *shape], INPUT_NAME, LOGITS,
                     ATTENTION if ATTENTION in keys else None)


# --- bundle format v2: code points in, calibrated probabilities out --------------------------------

CODEPOINTS = "codepoints"
PROBABILITIES = "probabilities"
KNOWN = "known"
FP16_WEIGHTS = "fp16-weights"


@dataclass
class CodepointGraph:
    """What the v2 graph wraps around the body: the code point tables, the vectors and the temperatures.

    `round16`: every float weight is rounded to a float16 value before conversion, so that storing it as
    float16 (TFLite fp16, ONNX float16 initializers) loses nothing and both formats compute with the same
    float32 numbers.
    """

    page_table: object          # int32 [PAGES]
    block_table: object         # int32 [blocks * PAGE]
    vectors: object             # int8 [V, dim] (with scales) or float32 [V, dim]
    scales: object              # float32 [V] or None
    temperatures: object        # float32 [n_labels]
    round16: bool


def _round16(array):
    import numpy as np

    return np.asarray(array, dtype=np.float32).astype(np.float16).astype(np.float32)


def _graph_body(body, arch: str, params: dict, dropout: float, graph: CodepointGraph, static: bool):
    """The body rebuilt (batch 1 and unrolled RNNs when `static`, for TFLite) with the trained weights,
    rounded to float16 values when the graph says so."""
    from kdedge.networks.models import BodySpec, build_body

    shape = body_input_shape(body)
    if _margin(arch, params) is not None:
        shape = (None, *shape[1:])  # the graph cuts the padding it does not need (_codepoint_forward)
    n_labels = int(body.output[LOGITS].shape[-1])
    spec = BodySpec(shape, n_labels, params, dropout, unroll=static, batch_size=1 if static else None)
    rebuilt = build_body(arch, spec, name="body")
    weights = body.get_weights()
    try:
        rebuilt.set_weights([_round16(w) if graph.round16 and w.dtype.kind == "f" else w for w in weights])
    except ValueError as e:
        raise ShapeError(f"the {arch} body rebuilt for export does not take the trained weights "
                         f"(architecture parameters changed?): {e}") from e
    return rebuilt


def _margin(arch: str, params: dict) -> int | None:
    from kdedge.networks.architectures import architecture

    rule = architecture(arch).padding_margin
    return None if rule is None else int(rule(params))


def _codepoint_forward(body, graph: CodepointGraph, margin: int | None = None):
    """A tf.function: int32 code points [batch, max_len] → {probabilities, known[, attention]}.

    With `margin` (the architecture's padding_margin), positions after the batch's last non-padding code
    point plus `margin` are cut before the embedding: the outputs are the same, the work follows the text.
    """
    import numpy as np
    import tensorflow as tf

    from .codepoints import MAX_CODE_POINT, PAGE

    scales = None if graph.scales is None else (
        _round16(graph.scales) if graph.round16 else np.asarray(graph.scales, np.float32))
    temperatures = np.asarray(graph.temperatures, np.float32)
    temperatures = _round16(temperatures) if graph.round16 else temperatures
    keys = _output_keys(body)

    def forward(codepoints):  # constants made inside the function, so they are the graph's, not inputs
        page_table = tf.constant(graph.page_table, dtype=tf.int32)
        block_table = tf.constant(graph.block_table, dtype=tf.int32)
        vectors = tf.constant(graph.vectors)
        c = tf.clip_by_value(codepoints, 0, MAX_CODE_POINT)
        block = tf.gather(page_table, tf.math.floordiv(c, PAGE))
        ids = tf.gather(block_table, block * PAGE + tf.math.floormod(c, PAGE))
        known = tf.reduce_sum(tf.cast(ids > 1, tf.int32), axis=1)
        if margin is not None:
            positions = tf.range(1, tf.shape(ids)[1] + 1)
            last = tf.reduce_max(positions * tf.cast(ids > 0, tf.int32))
            ids = ids[:, :tf.minimum(tf.shape(ids)[1], last + margin)]
        x = tf.gather(vectors, ids)
        if scales is not None:
            x = tf.cast(x, tf.float32) * tf.expand_dims(tf.gather(tf.constant(scales), ids), -1)
        out = body(x, training=False)
        result = {PROBABILITIES: tf.identity(tf.sigmoid(out[LOGITS] / tf.constant(temperatures)), name=PROBABILITIES),
                  KNOWN: tf.identity(known, name=KNOWN)}
        if ATTENTION in keys:
            result[ATTENTION] = tf.identity(out[ATTENTION], name=ATTENTION)
        return result

    return forward, keys


@dataclass
class CodepointModel:
    """One v2 model file in memory, with its manifest entry."""

    format: str
    precision: str                  # fp32 | fp16-weights
    data: bytes
    input_shape: list
    attention: bool

    @property
    def file(self) -> str:
        return f"model.{self.format}"

    def entry(self) -> dict:
        """The manifest `models` entry (docs/bundle.md, version 2)."""
        return {"format": self.format, "file": self.file, "precision": self.precision,
                "input_shape": list(self.input_shape), "input_name": CODEPOINTS, "input_dtype": "int32",
                "outputs": {PROBABILITIES: PROBABILITIES, KNOWN: KNOWN,
                            ATTENTION: ATTENTION if self.attention else None}}


def codepoint_onnx(body, arch: str, params: dict, dropout: float, graph: CodepointGraph) -> CodepointModel:
    """v2 ONNX (dynamic batch): the graph of docs/bundle.md "Inside the model"; with `graph.round16`
    the float initializers are stored as float16 with a Cast (float32 compute)."""
    _quiet()
    import tensorflow as tf
    import tf2onnx

    max_len = body_input_shape(body)[0]
    forward, keys = _codepoint_forward(_graph_body(body, arch, params, dropout, graph, static=False), graph,
                                       _margin(arch, params))
    spec = (tf.TensorSpec([None, max_len], tf.int32, name=CODEPOINTS),)
    try:
        proto, _ = tf2onnx.convert.from_function(tf.function(forward), input_signature=spec, opset=OPSET)
    except Exception as e:  # tf2onnx raises many types
        raise ConversionError(f"ONNX conversion of the {arch} code point model failed: {e}") from e
    outputs = [PROBABILITIES, KNOWN] + ([ATTENTION] if ATTENTION in keys else [])
    _name_outputs(proto, {k: k for k in outputs}, outputs)
    if graph.round16:
        _store_float16(proto)
    return CodepointModel("onnx", FP16_WEIGHTS if graph.round16 else "fp32", proto.SerializeToString(),
                          [None, max_len], ATTENTION in keys)


def _store_float16(proto) -> None:
    """Store every float32 initializer whose values are all float16 values as float16 plus a Cast node
    (lossless; onnxruntime folds the Cast at load, so the model computes in float32)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        if values.size < 16 or not np.array_equal(values.astype(np.float16).astype(np.float32), values):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT,
                                      name=f"{name}__cast"))
    for node in reversed(casts):
        proto.graph.node.insert(0, node)


def codepoint_tflite(body, arch: str, params: dict, dropout: float, graph: CodepointGraph) -> CodepointModel:
    """v2 TFLite (batch 1, builtin ops); weights stored as float32 (with `graph.round16`, float16 values)."""
    _quiet()
    import tensorflow as tf

    max_len = body_input_shape(body)[0]
    static = _graph_body(body, arch, params, dropout, graph, static=True)
    forward, keys = _codepoint_forward(static, graph, _margin(arch, params))
    function = tf.function(forward)
    concrete = function.get_concrete_function(tf.TensorSpec([1, max_len], tf.int32, name=CODEPOINTS))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # no converter optimisation: TFLite's float16 mode changed probabilities by ~1e-4 against the same
    # float16 values computed in float32 (ONNX), so rounded weights are stored as float32 here
    try:
        data = converter.convert()
    except Exception as e:  # the converter raises ConverterError and others
        raise ConversionError(f"TFLite conversion of the {arch} code point model failed: {e}") from e
    return CodepointModel("tflite", FP16_WEIGHTS if graph.round16 else "fp32", bytes(data), [1, max_len],
                          ATTENTION in keys)
