"""Build real kdedge bundles (docs/bundle.md) for the runtime tests.

Tiny TensorFlow models with fixed random weights are converted with tf2onnx (opset 17) and the
TFLite converter (builtin ops, batch 1); vocab, vectors, segmenter files and a checksummed manifest
are written next to them. `BuiltBundle.reference` recomputes the calibrated probabilities in plain
numpy from the same weights, independently of kdedge_run's loading and inference code.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from kdedge_run.text import (OOV_TOKEN, PAD_TOKEN, SENTENCE_END_TOKENS, CharMap, CharTokenizer,
                             JiebaTokenizer, Preprocessor, input_shape, sigmoid)

CORPUS = [
    "今天股市大涨，投资者信心十足。",
    "机器学习模型在手机上运行得很快！",
    "這家餐廳的服務很好，菜也好吃。",
    "球队昨晚赢得了冠军，球迷们欢呼。",
    "新款手机发布，价格比去年便宜。",
    "央行宣布降息，股市和债市都上涨；",
    "深度学习需要大量数据和算力？",
    "ＡＰＰ更新后电池续航变差了",
]
JIEBA_DICT = {"今天": 300, "股市": 200, "大涨": 80, "投资者": 90, "信心": 70, "十足": 40,
              "机器学习": 150, "模型": 120, "手机": 220, "运行": 100, "很快": 60, "餐厅": 90,
              "服务": 130, "好吃": 70, "球队": 90, "昨晚": 50, "冠军": 60, "球迷": 50, "欢呼": 30,
              "新款": 60, "发布": 110, "价格": 140, "去年": 80, "便宜": 60, "央行": 70, "宣布": 90,
              "降息": 40, "债市": 30, "上涨": 90, "深度学习": 80, "需要": 200, "大量": 90,
              "数据": 180, "算力": 20, "更新": 100, "电池": 80, "续航": 30, "变差": 20, "app": 50}
T2S = {"這": "这", "家": "家", "廳": "厅", "務": "务", "餐": "餐"}
LABELS = ["finance", "tech", "food", "sports"]
THRESHOLDS = [0.5, 0.4, 0.6, 0.35]
TEMPERATURES = [1.0, 1.5, 0.7, 2.0]
ARCHITECTURES = {  # architecture → (input spec, has attention)
    "gru_att": ({"kind": "sequence", "max_len": 16}, True),
    "textcnn": ({"kind": "sequence", "max_len": 16}, False),
    "han": ({"kind": "hierarchical", "max_sentences": 3, "max_sentence_len": 6,
             "sentence_end_tokens": list(SENTENCE_END_TOKENS)}, True),
}
DIM = 8
HIDDEN = 6


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class TinyModel:
    """Fixed random weights; `numpy_forward` and the TF graph compute the same logits/attention."""

    def __init__(self, arch: str, n_labels: int, seed: int):
        rng = np.random.default_rng(seed)
        self.arch = arch
        self.spec, self.has_attention = ARCHITECTURES[arch]
        self.shape = (*input_shape(self.spec), DIM)
        pooled = 2 * DIM if arch == "textcnn" else DIM
        self.w = {"att": rng.normal(size=(DIM,)), "sent": rng.normal(size=(DIM,)),
                  "w1": rng.normal(size=(pooled, HIDDEN)), "b1": rng.normal(size=(HIDDEN,)) * 0.1,
                  "w2": rng.normal(size=(HIDDEN, n_labels)) * 2, "b2": rng.normal(size=(n_labels,)) * 0.5}
        self.w = {k: v.astype(np.float32) for k, v in self.w.items()}

    def numpy_forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Embedded batch → (logits, attention or None), in float64."""
        w = {k: v.astype(np.float64) for k, v in self.w.items()}
        x = x.astype(np.float64)
        attention = None
        if self.arch == "textcnn":
            pooled = np.concatenate([x.mean(axis=1), x.max(axis=1)], axis=-1)
        elif self.arch == "gru_att":
            attention = _softmax(x @ w["att"], axis=-1)
            pooled = (attention[..., None] * x).sum(axis=1)
        else:
            word = _softmax(x @ w["att"], axis=-1)
            sentences = (word[..., None] * x).sum(axis=2)
            sent = _softmax(sentences @ w["sent"], axis=-1)
            pooled = (sent[..., None] * sentences).sum(axis=1)
            attention = word * sent[..., None]
        logits = np.tanh(pooled @ w["w1"] + w["b1"]) @ w["w2"] + w["b2"]
        return logits, attention

    def _tf_function(self):
        import tensorflow as tf

        c = self.w  # numpy arrays become graph constants (tf.constant captures would become inputs)
        arch = self.arch

        @tf.function
        def forward(x):
            out = {}
            if arch == "textcnn":
                pooled = tf.concat([tf.reduce_mean(x, axis=1), tf.reduce_max(x, axis=1)], axis=-1)
            elif arch == "gru_att":
                att = tf.nn.softmax(tf.tensordot(x, c["att"], axes=[[2], [0]]), axis=-1)
                pooled = tf.reduce_sum(att[..., None] * x, axis=1)
                out["attention"] = att
            else:
                word = tf.nn.softmax(tf.tensordot(x, c["att"], axes=[[3], [0]]), axis=-1)
                sentences = tf.reduce_sum(word[..., None] * x, axis=2)
                sent = tf.nn.softmax(tf.tensordot(sentences, c["sent"], axes=[[2], [0]]), axis=-1)
                pooled = tf.reduce_sum(sent[..., None] * sentences, axis=1)
                out["attention"] = word * sent[..., None]
            out["logits"] = tf.matmul(tf.tanh(tf.matmul(pooled, c["w1"]) + c["b1"]), c["w2"]) + c["b2"]
            return out

        return tf, forward

    def onnx_bytes(self, input_name: str = "embedded") -> bytes:
        """The model converted with tf2onnx, dynamic batch."""
        import tf2onnx

        tf, forward = self._tf_function()
        spec = (tf.TensorSpec([None, *self.shape], tf.float32, name=input_name),)
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=17)
        return proto.SerializeToString()

    def tflite_bytes(self) -> bytes:
        """The model converted with the TFLite converter, builtin ops, batch 1."""
        tf, forward = self._tf_function()
        concrete = forward.get_concrete_function(tf.TensorSpec([1, *self.shape], tf.float32))
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], forward)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


@lru_cache(maxsize=None)
def tiny_model(arch: str, n_labels: int = len(LABELS), seed: int = 0) -> TinyModel:
    return TinyModel(arch, n_labels, seed)


@lru_cache(maxsize=None)
def _converted(arch: str, fmt: str) -> bytes:
    model = tiny_model(arch)
    return model.onnx_bytes() if fmt == "onnx" else model.tflite_bytes()


@dataclass
class BuiltBundle:
    """A bundle written to `path`, with what is needed to recompute its outputs in numpy."""

    path: Path
    model: TinyModel
    preprocessor: Preprocessor
    table: np.ndarray  # float32 rows as the runtime must see them (dequantised)

    def reference(self, texts: list[str]) -> np.ndarray:
        """Calibrated probabilities `[len(texts), n_labels]` computed in numpy."""
        ids = np.stack([self.preprocessor.ids(self.preprocessor.tokens(t))[0] for t in texts])
        logits, _ = self.model.numpy_forward(self.table[ids])
        return sigmoid(logits / np.asarray(TEMPERATURES))

    def reference_attention(self, text: str) -> np.ndarray:
        ids = self.preprocessor.ids(self.preprocessor.tokens(text))[0]
        return self.model.numpy_forward(self.table[ids[None]])[1][0]


def build_bundle(dest: Path, arch: str = "gru_att", segmenter: str = "char", dtype: str = "float32",
                 formats: tuple[str, ...] = ("onnx", "tflite"), t2s: bool = False) -> BuiltBundle:
    """Write a complete bundle to `dest` (created) and return it with its numpy reference."""
    dest = Path(dest)
    (dest / "segmenter" if segmenter == "jieba" or t2s else dest).mkdir(parents=True)
    model = tiny_model(arch)
    convert = CharMap("t2s", T2S) if t2s else None
    tokenizer = JiebaTokenizer(JIEBA_DICT, hmm=True) if segmenter == "jieba" else CharTokenizer()
    spec = {**model.spec, "pad_id": 0, "oov_id": 1}
    probe = Preprocessor(tokenizer, {}, spec, convert)
    tokens = sorted({t for text in CORPUS[:-1] for t in probe.tokens(text)})  # last text: OOV tokens
    words = [PAD_TOKEN, OOV_TOKEN, *tokens]
    vocab = {w: i for i, w in enumerate(words)}
    table = np.random.default_rng(1).normal(size=(len(words), DIM)).astype(np.float32)
    table[0] = 0
    (dest / "vocab.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
    if dtype == "int8":
        scales = (np.abs(table).max(axis=1) / 127).astype(np.float32)
        quantised = np.round(table / np.where(scales == 0, 1, scales)[:, None]).astype(np.int8)
        np.save(dest / "vectors.int8.npy", quantised)
        np.save(dest / "vectors.scales.npy", scales)
        table = quantised.astype(np.float32) * scales[:, None]
        embeddings = {"dim": DIM, "dtype": "int8", "file": "vectors.int8.npy", "scales": "vectors.scales.npy"}
    else:
        stored = table.astype(dtype)
        np.save(dest / "vectors.npy", stored)
        table = stored.astype(np.float32)
        embeddings = {"dim": DIM, "dtype": dtype, "file": "vectors.npy", "scales": None}
    conv = None
    if t2s:
        convert.save(dest / "segmenter" / "t2s.json")
        conv = {"type": "char_map", "name": "t2s", "file": "segmenter/t2s.json"}
    if segmenter == "jieba":
        (dest / "segmenter" / "dict.txt").write_text(
            "".join(f"{w} {f}\n" for w, f in JIEBA_DICT.items()), encoding="utf-8")
        seg = {"type": "jieba", "dictionary": "segmenter/dict.txt", "hmm": True, "convert": conv,
               "jieba_version": "0.42.1", "trained_with": "jieba"}
    else:
        seg = {"type": "char", "convert": conv, "trained_with": "char"}
    models = []
    for fmt in formats:
        name = f"model.{fmt}"
        (dest / name).write_bytes(_converted(arch, fmt))
        batch = None if fmt == "onnx" else 1
        models.append({"format": fmt, "file": name, "precision": "fp32",
                       "input_shape": [batch, *model.shape], "input_name": "embedded",
                       "logits_name": "logits",
                       "attention_name": "attention" if model.has_attention else None})
    (dest / "README.md").write_text(f"# test bundle ({arch})\n", encoding="utf-8")
    manifest = {
        "format": "kdedge-bundle", "format_version": 1, "kdedge_version": "0.1.0",
        "created": "2025-01-01T00:00:00Z", "architecture": arch, "model_kind": "kd",
        "labels": LABELS, "thresholds": THRESHOLDS,
        "calibration": {"method": "temperature", "temperatures": TEMPERATURES},
        "input": spec, "vocab": {"file": "vocab.txt", "size": len(words)},
        "embeddings": embeddings, "segmenter": seg, "models": models,
        "metrics": {"at_0.5": {"micro_f1": 0.8, "macro_f1": 0.7},
                    "per_label_f1": dict(zip(LABELS, [0.9, 0.8, 0.7, 0.6]))},
        "calibration_report": {"ece_before": [0.1] * 4, "ece_after": [0.05] * 4},
        "segmentation_agreement": {"token_f1": 1.0, "texts": len(CORPUS)},
        "parity": {"texts": len(CORPUS), "reference": "keras", "results": [
            {"format": f, "precision": "fp32", "bytes": 1, "max_abs_dp": 1e-6, "flipped_decisions": 0,
             "macro_f1": 0.7, "macro_f1_change": 0.0} for f in formats]},
    }
    write_manifest(dest, manifest)
    return BuiltBundle(dest, model, Preprocessor(tokenizer, vocab, spec, convert), table)


def write_manifest(dest: Path, manifest: dict) -> None:
    """Write manifest.json with `files` recomputed from every other file under `dest`."""
    files = {}
    for path in sorted(p for p in Path(dest).rglob("*") if p.is_file() and p.name != "manifest.json"):
        data = path.read_bytes()
        files[path.relative_to(dest).as_posix()] = {"sha256": hashlib.sha256(data).hexdigest(),
                                                    "bytes": len(data)}
    manifest = {**manifest, "files": files}
    (Path(dest) / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2),
                                              encoding="utf-8")


def read_manifest(dest: Path) -> dict:
    return json.loads((Path(dest) / "manifest.json").read_text(encoding="utf-8"))


def classifier_cache(built: dict):
    """`get(name, backend)` → a loaded kdedge_run classifier for `built[name]`, loaded once per pair."""
    import kdedge_run

    cache = {}

    def get(name: str, backend: str = "onnx"):
        if (name, backend) not in cache:
            cache[name, backend] = kdedge_run.load(built[name].path, backend=backend)
        return cache[name, backend]

    return get


def copy_built(built: dict, name: str, dest: Path) -> Path:
    """A writable copy of a built bundle at `dest` (symlinks kept as links)."""
    import shutil

    return Path(shutil.copytree(built[name].path, dest, symlinks=True))

