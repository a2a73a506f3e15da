"""The bundle's pinned segmenter (from the run) and how well the runtime reproduces training segmentation."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

from kdedge.files import SEGMENTER_CHAR_MAP, SEGMENTER_DICTIONARY
from kdedge.text.segment import token_f1

from .errors import RunDirectoryError
from .run import Run


def jieba_version() -> str:
    try:
        return metadata.version("jieba")
    except metadata.PackageNotFoundError:
        import jieba

        return getattr(jieba, "__version__", "unknown")


def segmenter_spec(run: Run) -> tuple[dict, dict[str, Path]]:
    """The manifest `segmenter` object and the files to copy (bundle path → run file).

    A run with a pinned dictionary (jieba, or ckip whose segmentation was pinned into one) gets the
    jieba segmenter with that dictionary; a char run gets the char segmenter.
    """
    seg = run.segmenter
    trained_with = seg.get("type")
    files: dict[str, Path] = {}
    convert = None
    if seg.get("convert") == "t2s" or seg.get("char_map"):
        src = run.path / (seg.get("char_map") or SEGMENTER_CHAR_MAP)
        if not src.is_file():
            raise RunDirectoryError(f"{src}: missing (the run converts Traditional → Simplified before segmenting)")
        files[SEGMENTER_CHAR_MAP] = src
        convert = {"type": "char_map", "name": "t2s", "file": SEGMENTER_CHAR_MAP}
    if seg.get("dictionary"):
        src = run.path / seg["dictionary"]
        if not src.is_file():
            raise RunDirectoryError(f"{src}: missing (the run's pinned segmentation dictionary)")
        files[SEGMENTER_DICTIONARY] = src
        spec = {"type": "jieba", "dictionary": SEGMENTER_DICTIONARY, "hmm": bool(seg.get("hmm", True)), "convert": convert,
                "jieba_version": jieba_version(), "trained_with": trained_with}
        if trained_with == "ckip" and seg.get("ckip_model"):
            spec["trained_with_model"] = Path(str(seg["ckip_model"]).rstrip("/")).name
        return spec, files
    if trained_with != "char":
        raise RunDirectoryError(f"{run.path / 'config.json'}: segmenter {trained_with!r} without a pinned dictionary; "
                                "only the char segmenter needs none")
    return {"type": "char", "convert": convert, "trained_with": "char"}, files


def agreement(tokenize, texts: list[str], gold: list[list[str]]) -> dict:
    """Token F1 of `tokenize` (the runtime's) against the training segmentation, and exact matches."""
    predicted = []
    for text in texts:
        try:
            predicted.append(list(tokenize(text)))
        except ValueError:  # no tokens at all ("empty text")
            predicted.append([])
    return {"token_f1": float(token_f1(predicted, gold)), "texts": len(texts),
            "identical_texts": sum(p == g for p, g in zip(predicted, gold))}
