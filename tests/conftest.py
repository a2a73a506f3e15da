"""Shared test setup: a private segmentation cache and a tiny keyword-labelled Chinese corpus."""
from __future__ import annotations

import json
import os
import random

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# label → keywords; a text carries a label exactly when it contains one of the label's keywords
KEYWORDS = {"体育": ["足球", "篮球", "比赛"], "经济": ["股票", "银行", "市场"], "健康": ["医院", "感冒", "医生"]}
FILLERS = ["今天", "我们", "看到", "一条", "新闻", "关于", "昨天", "大家", "讨论", "城市", "朋友", "说"]


def make_corpus(n: int = 90, seed: int = 0) -> list[dict]:
    """`n` short Chinese texts whose labels are learnable from keywords (every text has ≥1 label)."""
    rng = random.Random(seed)
    names = list(KEYWORDS)
    rows = []
    for i in range(n):
        labels = [name for name in names if rng.random() < 0.4] or [names[i % len(names)]]
        words = rng.sample(FILLERS, 4) + [rng.choice(KEYWORDS[name]) for name in labels]
        rng.shuffle(words)
        rows.append({"id": f"t{i}", "text": "".join(words) + "。", "labels": labels})
    return rows


def write_jsonl(path, rows) -> str:
    """Write dicts as JSON Lines (UTF-8); returns the path as a string."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path)


def without_timings(obj):
    """A JSON-like result without wall-clock timings, teacher-cache facts and where a piece ran (which vary from
    run to run), and without a fold file's digest (a hash of its content, timings included)."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items()
                if "seconds" not in k and "cached" not in k and k not in ("digest", "ran_on")}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def assert_same_results(got, expected, rel: float = 1e-5, where: str = "") -> None:
    """Equal JSON-like results, floats within `rel` (TensorFlow's float sums depend on its thread count:
    a Ray task runs with one intra-op thread, the local path with the machine's)."""
    if isinstance(expected, float) and isinstance(got, float):
        assert got == pytest.approx(expected, rel=rel, abs=1e-7), where
    elif isinstance(expected, dict) and isinstance(got, dict):
        assert sorted(got) == sorted(expected), where
        for k in expected:
            assert_same_results(got[k], expected[k], rel, f"{where}/{k}")
    elif isinstance(expected, list) and isinstance(got, list):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same_results(a, b, rel, f"{where}[{i}]")
    else:
        assert got == expected, where


@pytest.fixture(scope="session", autouse=True)
def kdedge_cache(tmp_path_factory):
    """Every test's segmentation cache lives in a temporary directory, never ~/.cache."""
    cache = tmp_path_factory.mktemp("kdedge_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDEDGE_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> str:
    """The keyword corpus as a .jsonl file (90 texts, 3 labels)."""
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", make_corpus())


def input_args(source: str, data: bytes, path) -> tuple[list[str], bytes | None]:
    """The `--input` arguments and the stdin that hand `data` to a CLI: written to `path` ("file") or piped ("stdin")."""
    if source == "file":
        path.write_bytes(data)
        return ["--input", str(path)], None
    return ["--input", "-"], data


def require_extra(module: str, extra: str):
    """`module` imported, or the test skipped: but under CI (`CI` set), where .ci/run installs every extra, a
    missing one fails the run instead of hiding tests."""
    import importlib
    import os

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} missing ({exc}): pip install '.[{extra}]'"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
