"""kdedge.text.segment: jieba/char segmenters, the pinned dictionary vs the runtime, script conversion, cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kdedge.text.segment import (Segmenter, pin_dictionary, resolve_convert, t2s_map, token_f1, traditional_share,
                            write_dictionary)
from kdedge_run.text import CharMap, JiebaTokenizer, Preprocessor, read_dictionary

SIMPLIFIED = [
    "我来到北京清华大学",
    "他来到了网易杭研大厦",  # 杭研: a new word found by jieba's HMM only
    "小明硕士毕业于中国科学院计算所，后在日本京都大学深造",
    "今天天气很好\n我们去公园散步。",
    "iPhone 15 Pro的价格是7999元，ＡＩ模型的准确率达到95%！",
    "  前后有空格\t和制表符  ",
]
TRADITIONAL = [
    "我們今天去醫院看醫生，經濟發展與銀行貸款",
    "臺灣的機器學習模型準確率達到九成",
    "這個問題應該怎麼處理？請說明。",
]
MIXED = SIMPLIFIED + TRADITIONAL


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty segmentation cache for one test."""
    monkeypatch.setenv("KDEDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "segmentation"


def test_jieba_is_deterministic(cache, monkeypatch, tmp_path):
    first = Segmenter("jieba").segment(MIXED)
    monkeypatch.setenv("KDEDGE_CACHE", str(tmp_path / "other"))  # no cache hit: computed afresh
    second = Segmenter("jieba").segment(MIXED)
    assert first == second
    assert first["tokens"][0] == ["我", "来到", "北京", "清华大学"]
    assert "杭研" in first["tokens"][1]


def test_jieba_is_deterministic_across_processes(tmp_path):
    """Another interpreter (other hash seed, empty cache) gives the same tokens and dictionary."""
    here = Segmenter("jieba").segment(MIXED)
    code = ("import json, sys; from kdedge.text.segment import Segmenter; "
            "print(json.dumps(Segmenter('jieba').segment(json.loads(sys.argv[1])), ensure_ascii=False))")
    env = {**os.environ, "KDEDGE_CACHE": str(tmp_path / "sub"), "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(MIXED, ensure_ascii=False)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == here


@pytest.mark.parametrize("convert", ["none", "t2s"])
@pytest.mark.parametrize("hmm", [True, False])
def test_pinned_dictionary_reproduces_training_segmentation(tmp_path, cache, convert, hmm):
    """The runtime's jieba over the shipped dictionary file (+ char map) re-segments exactly as training did."""
    segmenter = Segmenter("jieba", convert=convert, hmm=hmm)
    result = segmenter.segment(MIXED)
    assert result["dictionary"], "jieba must pin a dictionary"
    write_dictionary(result["dictionary"], tmp_path / "dict.txt")
    char_map = None
    if convert == "t2s":
        segmenter.char_map.save(tmp_path / "t2s.json")
        char_map = CharMap.load("t2s", tmp_path / "t2s.json")
    runtime = Preprocessor(JiebaTokenizer(read_dictionary(tmp_path / "dict.txt"), hmm=hmm), {}, {}, char_map)
    again = [runtime.tokens(t) for t in MIXED]
    assert token_f1(again, result["tokens"]) == 1.0
    assert again == result["tokens"]
    if convert == "t2s":
        assert ["我们", "今天", "去", "医院", "看", "医生"] == result["tokens"][len(SIMPLIFIED)][:6]


def test_pinned_dictionary_matters():
    """Without the pinned dictionary (an empty one), the runtime would segment differently."""
    result = Segmenter("jieba").segment(SIMPLIFIED)
    bare = Preprocessor(JiebaTokenizer({"的": 1}, hmm=True), {}, {}, None)
    assert token_f1([bare.tokens(t) for t in SIMPLIFIED], result["tokens"]) < 0.95


def test_tokens_are_normalised_and_blank_free():
    tokens = Segmenter("jieba").segment(["ＡＩ  模型\n\n很好！"])["tokens"][0]
    assert tokens[0] == "ai" and "!" in tokens
    assert all(tok.strip() == tok and tok for tok in tokens)


def test_char_segmenter_gives_characters(cache):
    result = Segmenter("char").segment(["我爱 北京！Ａb", "繁體"])
    assert result["tokens"] == [["我", "爱", "北", "京", "!", "a", "b"], ["繁", "體"]]
    assert result["dictionary"] is None
    assert Segmenter("char", convert="t2s").segment(["繁體"])["tokens"] == [["繁", "体"]]


def test_segmenter_rejects_bad_settings():
    with pytest.raises(ValueError, match="segmenter must be one of"):
        Segmenter("spacy")
    with pytest.raises(ValueError, match="ckip-model"):
        Segmenter("ckip")


def test_resolve_convert():
    assert traditional_share(TRADITIONAL) > 0.05
    assert traditional_share(SIMPLIFIED) == 0.0
    assert traditional_share(["abc 123"]) == 0.0
    assert resolve_convert("auto", TRADITIONAL) == "t2s"
    assert resolve_convert("auto", SIMPLIFIED) == "none"
    assert resolve_convert("none", TRADITIONAL) == "none"
    assert resolve_convert("t2s", SIMPLIFIED) == "t2s"
    with pytest.raises(ValueError, match="auto, t2s or none"):
        resolve_convert("s2t", SIMPLIFIED)


def test_t2s_map():
    table = t2s_map()
    assert table("醫院經濟發展與銀行") == "医院经济发展与银行"
    assert table("医院") == "医院"
    assert all(len(k) == 1 and len(v) == 1 and k != v for k, v in table.mapping.items())


def test_cache_hit_returns_the_same_result(cache, monkeypatch):
    texts = ["我来到北京清华大学", "今天天气很好"]
    first = Segmenter("jieba").segment(texts)
    files = list(cache.glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text(encoding="utf-8")) == first

    def boom(self, texts):
        raise AssertionError("recomputed despite a cache entry")

    monkeypatch.setattr(Segmenter, "_segment_uncached", boom)
    assert Segmenter("jieba").segment(texts) == first
    with pytest.raises(AssertionError, match="recomputed"):  # other settings → other entry
        Segmenter("jieba", hmm=False).segment(texts)
    with pytest.raises(AssertionError, match="recomputed"):  # other texts → other entry
        Segmenter("jieba").segment(texts[:1])


@pytest.mark.parametrize("damage", ["truncated", "empty", "null", "wrong_shape"])
def test_damaged_cache_entry_is_recomputed(cache, damage):
    texts = ["我来到北京清华大学", "今天天气很好"]
    first = Segmenter("jieba").segment(texts)
    (path,) = cache.glob("*.json")
    content = path.read_text(encoding="utf-8")
    path.write_text({"truncated": content[: len(content) // 2], "empty": "", "null": "null",
                     "wrong_shape": json.dumps({"tokens": [["我"]], "dictionary": {}})}[damage], encoding="utf-8")
    assert Segmenter("jieba").segment(texts) == first
    assert json.loads(path.read_text(encoding="utf-8")) == first  # and the entry is repaired
    assert not [p for p in cache.iterdir() if p.suffix != ".json"]  # no temp files left


def test_token_f1():
    gold = [["我", "来到", "北京"], ["清华", "大学"]]
    assert token_f1(gold, gold) == 1.0
    assert token_f1([["我来到北京"], ["清华大学"]], gold) == pytest.approx(2 * 0 / (2 + 5))
    # 我|来到|北京 vs 我|来|到|北京: spans (0,1), (3,5) agree → P 2/4, R 2/3
    assert token_f1([["我", "来", "到", "北京"]], [gold[0]]) == pytest.approx(2 * 2 / (4 + 3))
    assert token_f1([], []) == 1.0


def test_pin_and_write_dictionary(tmp_path):
    pinned = pin_dictionary([["北京", "喵喵", "北京"], ["喵喵", "a b"]], {"北京": 1000, "上海": 900})
    assert pinned == {"a b": 1, "北京": 1000, "喵喵": 2}  # base frequency if known, else the corpus count
    write_dictionary(pinned, tmp_path / "dict.txt")
    assert read_dictionary(tmp_path / "dict.txt") == {"北京": 1000, "喵喵": 2}  # words with spaces dropped
