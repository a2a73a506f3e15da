"""Word segmentation for training: jieba (default), ckip (local model dir) or char; cached by content hash.

All backends share the runtime's normalisation and script conversion (kdedge_run.text), and each
produces a *pinned* jieba dictionary so that the exported runtime segments as training did.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

from kdedge.files import atomic_path, cache_dir
from kdedge.errors import UsageError
from kdedge_run.text import CharMap, CharTokenizer, JiebaTokenizer, Preprocessor, normalise, read_dictionary

SEGMENTERS = ("jieba", "ckip", "char")


@lru_cache(maxsize=1)
def t2s_map() -> CharMap:
    """Traditional → Simplified code-point map from OpenCC's TSCharacters table (first candidate)."""
    import opencc

    path = Path(opencc.__file__).parent / "dictionary" / "TSCharacters.txt"
    mapping = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 2:
            src, dst = parts[0], parts[1].split(" ")[0]
            if len(src) == 1 and len(dst) == 1 and src != dst:
                mapping[src] = dst
    return CharMap("t2s", mapping)


def traditional_share(texts: list[str]) -> float:
    """Share of Han characters that the t2s map changes (≈0 for Simplified, ≥0.05 for Traditional)."""
    table = t2s_map().mapping
    han = changed = 0
    for text in texts:
        for ch in text:
            if "\u4e00" <= ch <= "\u9fff":
                han += 1
                changed += ch in table
    return changed / han if han else 0.0


def resolve_convert(convert: str, texts: list[str]) -> str:
    """`auto` becomes `t2s` for Traditional text (≥2% of Han characters change), else `none`."""
    if convert == "auto":
        return "t2s" if traditional_share(texts) >= 0.02 else "none"
    if convert not in ("t2s", "none"):
        raise ValueError(f"convert must be auto, t2s or none, not {convert!r}")
    return convert


@lru_cache(maxsize=1)
def jieba_default_freqs() -> dict[str, int]:
    """jieba's bundled default dictionary as {word: freq}."""
    import jieba

    return read_dictionary(Path(jieba.__file__).parent / "dict.txt")


class Segmenter:
    """Normalise → convert → segment a corpus; cache results by content hash; pin a jieba dictionary."""

    def __init__(self, kind: str = "jieba", convert: str = "none", hmm: bool = True,
                 ckip_model: str | None = None, jieba_dict: str | None = None, progress: bool = False):
        """`progress`: show a bar on stderr while segmenting (not for ckip)."""
        if kind not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {', '.join(SEGMENTERS)}, not {kind!r}")
        if kind == "ckip" and not ckip_model:
            raise UsageError("the ckip segmenter needs --ckip-model DIR (a local model directory)")
        self.kind, self.convert, self.hmm = kind, convert, hmm
        self.ckip_model, self.jieba_dict, self.progress = ckip_model, jieba_dict, progress
        self.char_map = t2s_map() if convert == "t2s" else None
        self._tokenizer = None

    def spec(self) -> dict:
        """What segmented the training texts (recorded in the run)."""
        spec = {"type": self.kind, "convert": self.convert, "hmm": self.hmm}
        if self.kind == "ckip":
            spec["ckip_model"] = str(self.ckip_model)
        if self.jieba_dict:
            spec["jieba_dict"] = str(self.jieba_dict)
        return spec

    def _base_tokenizer(self):
        if self._tokenizer is None:
            if self.kind == "char":
                self._tokenizer = CharTokenizer()
            elif self.kind == "ckip":
                from kdedge.text.segment_ckip import CkipTokenizer
                self._tokenizer = CkipTokenizer(self.ckip_model)
            else:
                self._tokenizer = JiebaTokenizer(self._base_freqs(), hmm=self.hmm)
        return self._tokenizer

    def _base_freqs(self) -> dict[str, int]:
        return read_dictionary(self.jieba_dict) if self.jieba_dict else jieba_default_freqs()

    def _segment_uncached(self, texts: list[str]) -> dict:
        from tqdm.auto import tqdm

        def shown(desc: str):
            return tqdm(texts, desc=desc, unit=" texts", leave=False, disable=not self.progress, mininterval=1)

        tokenizer = self._base_tokenizer()
        if self.kind == "ckip":
            prepared = [normalise(t) for t in texts]
            if self.char_map is not None:
                prepared = [self.char_map(t) for t in prepared]
            tokens = tokenizer.tokenize_many(prepared)
            return {"tokens": tokens, "dictionary": pin_dictionary(tokens, {})}
        base = [Preprocessor(tokenizer, {}, {}, self.char_map).tokens(t) for t in shown("segmenting")]
        if self.kind == "char":
            return {"tokens": base, "dictionary": None}
        # Re-segment with a dictionary pinned to this corpus: the runtime ships that dictionary and
        # reproduces this segmentation exactly, without jieba's 5 MB default dictionary.
        dictionary = pin_dictionary(base, self._base_freqs())
        pinned = Preprocessor(JiebaTokenizer(dictionary, self.hmm), {}, {}, self.char_map)
        return {"tokens": [pinned.tokens(t) for t in shown("segmenting with the pinned dictionary")],
                "dictionary": dictionary}

    def segment(self, texts: list[str]) -> dict:
        """`{"tokens": [[str]], "dictionary": {word: freq} | None}` for `texts`.

        The dictionary is what the runtime's jieba needs to reproduce the tokens (None for `char`).
        Results are cached by the hash of the spec and the texts.
        """
        digest = hashlib.sha256(json.dumps([self.spec(), texts], ensure_ascii=False).encode()).hexdigest()
        path = cache_dir("segmentation") / f"{digest}.json"
        if path.is_file():
            try:
                cached = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(cached, dict) and len(cached.get("tokens") or ()) == len(texts):
                    return cached
            except (OSError, ValueError):
                pass  # a damaged cache entry is recomputed
        result = self._segment_uncached(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
        return result


def pin_dictionary(segmented: list[list[str]], base_freqs: dict[str, int]) -> dict[str, int]:
    """Every word of the segmentation with its base-dictionary frequency (else its corpus count)."""
    counts = Counter(tok for toks in segmented for tok in toks)
    return {w: base_freqs.get(w) or c for w, c in sorted(counts.items())}


def write_dictionary(freqs: dict[str, int], path: Path) -> None:
    """Write a jieba dictionary file (`word freq` per line, sorted, no whitespace inside words)."""
    lines = [f"{w} {f}" for w, f in sorted(freqs.items()) if w and not any(c.isspace() for c in w)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def token_f1(predicted: list[list[str]], gold: list[list[str]]) -> float:
    """Word-boundary F1 between two segmentations of the same texts (spans compared)."""
    def spans(tokens):
        out, pos = set(), 0
        for tok in tokens:
            out.add((pos, pos + len(tok)))
            pos += len(tok)
        return out

    tp = n_pred = n_gold = 0
    for p, g in zip(predicted, gold):
        sp, sg = spans(p), spans(g)
        tp += len(sp & sg)
        n_pred += len(sp)
        n_gold += len(sg)
    return 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 1.0
