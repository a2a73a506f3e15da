"""Long texts read whole (docs/bundle.md "Long texts (windows)", issue 28): a format-2 text longer than max_len
is read as overlapping windows (`input.windows`), each label's probability pooled by max over the windows;
`truncated` only when code points were not read at all (past the window bound). Runs on the shipped default
bundle."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import kdedge_run
from kdedge_export.golden import CONTRACT_TEXTS, LONG_DRUG_MESSAGE, LONG_TEXTS
from kdedge_run import BundleError
from kdedge_run.classifier import InputError
from kdedge_run.text import DEFAULT_MAX_WINDOWS, Windows, default_windows

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"
SHORT = ["頭痛", "我最近頭痛又發燒，吃了普拿疼還是不舒服", "血壓１２０／８０ｍｍＨｇ", "ЖЖЖ ЩЩЩ", "頭痛ЖЖЖЖЖЖЖЖ",
         "  血糖\t\t偏高\n需要控制飲食  ", "喉嚨痛\ud800咳嗽", "痛" * 128, "痛" * 128 + " \t"]
TRIGGER = "😣"  # the code point the faulty backend below gives NaN for


def _manifest(path: Path = DEFAULT) -> dict:
    return json.loads((path / "manifest.json").read_text(encoding="utf-8"))


def _copy(tmp_path: Path, change) -> Path:
    """A copy of the default bundle whose manifest.json (not checksummed) is changed by `change`."""
    out = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
    shutil.copytree(DEFAULT, out, symlinks=False)
    m = _manifest(out)
    change(m)
    (out / "manifest.json").write_text(json.dumps(m, ensure_ascii=False), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def clf():
    return kdedge_run.load(DEFAULT)


@pytest.fixture(scope="module")
def no_rule(tmp_path_factory):
    """The default bundle without `input.windows`: how a bundle written before the rule reads (the first
    max_len code points; an older reader ignores the field and reads the same)."""
    def older(m):  # its golden vectors are this bundle's, read with the rule: an older export has its own
        m["input"].pop("windows")
        m.pop("golden")
    return kdedge_run.load(_copy(tmp_path_factory.mktemp("norule"), older))


def _probs(p) -> np.ndarray:
    return np.array(list(p.probabilities.values()))


def _window_texts(c, text: str) -> list[str]:
    """The text of each window of `text` (its code points read, after dropping), to run alone."""
    rows = c._prepare(text).rows
    return ["".join(chr(cp) for cp in row if cp) for row in rows]


def test_the_default_bundle_has_the_window_rule_new_exports_get():
    spec = _manifest()["input"]
    assert spec["windows"] == {"size": 128, "stride": 64, "max_windows": DEFAULT_MAX_WINDOWS, "pool": "max"}
    assert default_windows(spec["max_len"]).as_manifest() == spec["windows"]


def test_window_spans():
    w = Windows(128, 64, 16)
    assert w.reach == 128 + 15 * 64 == 1088
    assert w.spans(1) == [(0, 1)] and w.spans(128) == [(0, 128)]
    assert w.spans(129) == [(0, 128), (64, 129)]
    assert w.spans(192) == [(0, 128), (64, 192)] and w.spans(193) == [(0, 128), (64, 192), (128, 193)]
    assert w.spans(411)[-1] == (320, 411) and len(w.spans(411)) == 6
    assert len(w.spans(1088)) == 16 and w.spans(1088)[-1] == (960, 1088)
    assert w.spans(5000) == w.spans(1088)  # past the bound: the same 16 windows
    for n in range(1, 1089):  # every code point read is in a window; every window after the first > size - stride
        spans = w.spans(n)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a2 < b1 for (_, b1), (a2, _) in zip(spans, spans[1:]))
        assert all(b - a > 64 for a, b in spans[1:])
    assert Windows.single(128).spans(400) == [(0, 128)] and Windows.single(128).reach == 128


def test_short_texts_give_exactly_what_one_window_gave(clf, no_rule):
    golden = [json.loads(line)["text"] for line in (DEFAULT / "golden.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = SHORT + [t for t in golden if len(clf.tokenize(t)) <= 128]
    for text in texts:
        assert clf.predict(text) == no_rule.predict(text), text[:20]
        assert clf.predict(text).windows == 1
    assert clf.predict(texts) == no_rule.predict(texts)


def test_the_drug_message_gets_drug_now_and_did_not_when_truncated(clf, no_rule):
    assert len(LONG_DRUG_MESSAGE) == 411 and LONG_DRUG_MESSAGE.index("阿斯匹靈") > 128
    assert "藥" not in LONG_DRUG_MESSAGE and "阿斯匹靈" not in LONG_DRUG_MESSAGE[:389]
    p = clf.predict(LONG_DRUG_MESSAGE)
    assert "DRUG" in p.labels, p.labels
    assert (p.tokens, p.truncated, p.windows, p.judged) == (411, False, 6, True)
    before = no_rule.predict(LONG_DRUG_MESSAGE)
    assert "DRUG" not in before.labels and (before.tokens, before.truncated) == (128, True)
    threshold = clf.info()["thresholds"][clf.labels.index("DRUG")]
    assert before.probabilities["DRUG"] < threshold <= p.probabilities["DRUG"]
    # a golden vector of the default bundle (JS runs it too: runtime/js/test/golden.test.mjs)
    lines = [json.loads(line) for line in (DEFAULT / "golden.jsonl").read_text(encoding="utf-8").splitlines()]
    line = next(g for g in lines if g["text"] == LONG_DRUG_MESSAGE)
    assert "DRUG" in line["labels"] and line["windows"] == 6 and not line["truncated"]


def test_a_long_texts_probabilities_are_the_max_over_its_windows_run_alone(clf):
    min_coverage = clf.info()["abstain"]["min_coverage"]
    for text in LONG_TEXTS + ("每天" + "喝水運動睡眠" * 60 + "後來胸口悶痛",):
        p = clf.predict(text)
        alone = clf.predict(_window_texts(clf, text))
        assert p.windows == len(alone) > 1
        votes = [w for w in alone if w.judged or not p.judged]  # a judged text: its judged windows only
        assert votes
        assert np.array_equal(_probs(p), np.max([_probs(w) for w in votes], axis=0)), text[:20]
        read = sum(w.tokens for w in alone)
        known = sum(round(w.coverage * w.tokens) for w in alone)
        assert p.coverage == known / read
        assert p.judged == (known >= 1 and p.coverage >= min_coverage)


def test_windows_the_model_cannot_judge_do_not_vote(clf):
    text = LONG_DRUG_MESSAGE + "Ж" * 150  # the last windows are mostly unknown characters
    p = clf.predict(text)
    alone = clf.predict(_window_texts(clf, text))
    assert p.judged and not all(w.judged for w in alone)
    garbage = max(w.probabilities["TREAT"] for w in alone if not w.judged)
    assert p.probabilities["TREAT"] == max(w.probabilities["TREAT"] for w in alone if w.judged) < garbage
    threshold = clf.info()["thresholds"][clf.labels.index("TREAT")]
    assert "TREAT" not in p.labels and garbage >= threshold  # a window of unknown characters would have added it
    # nothing judged: not judged, probabilities the max over all windows, no labels
    q = clf.predict("頭痛發燒" * 30 + "😀" * 400)
    assert not q.judged and q.labels == [] and q.windows == 8


def test_a_mix_of_long_and_short_texts_in_one_call_equals_one_at_a_time(clf):
    rng = np.random.default_rng(28)
    alphabet = list("股市大涨医院头痛發燒咳嗽藥物血壓心臟，。😀Ж ")
    texts = ["".join(rng.choice(alphabet, size=n)) for n in rng.integers(1, 1400, size=90)]
    texts += list(LONG_TEXTS) + SHORT
    texts = [t for t in texts if t.strip()]
    rng.shuffle(texts)
    together = clf.predict(texts)
    assert together == [clf.predict(t) for t in texts]
    assert any(p.windows > 1 for p in together) and any(p.windows == 1 for p in together)
    assert any(p.truncated for p in together)
    each = clf._predict_each([texts[0], "", 3, texts[1]])
    assert each[0] == together[0] and each[3] == together[1]
    assert isinstance(each[1], ValueError) and isinstance(each[2], TypeError)


def test_the_window_bound_and_truncated(clf):
    reach = 1088
    for n, windows, truncated in ((128, 1, False), (129, 2, False), (reach, 16, False), (reach + 1, 16, True)):
        p = clf.predict("痛" * n)
        assert (p.tokens, p.windows, p.truncated) == (min(n, reach), windows, truncated), n
    assert not clf.predict("痛" * reach + " \t\n\u3000").truncated  # only dropped code points follow
    assert clf.tokenize("頭" * 5 + "痛" * 2000) == ["頭"] * 5 + ["痛"] * (reach - 5)
    start = time.perf_counter()
    p = clf.predict("頭痛發燒" * 500_000)  # 2 MB: work is bounded by the window rule
    assert p.truncated and p.tokens == reach and p.windows == 16
    assert time.perf_counter() - start < 5.0
    assert p.probabilities == clf.predict(("頭痛發燒" * 300)[:reach]).probabilities


def test_an_over_long_golden_text_is_cut_at_the_bound_and_marked(clf):
    lines = [json.loads(line) for line in (DEFAULT / "golden.jsonl").read_text(encoding="utf-8").splitlines()]
    cut = [g for g in lines if g["truncated"]]
    assert cut and all(g["tokens"] == 1088 and g["windows"] == 16 for g in cut)
    assert any(200 <= len(g["text"]) <= 1000 and g["windows"] > 1 for g in lines)
    assert sum(1 for g in lines if g["windows"] > 1) >= 6
    assert set(LONG_TEXTS) <= set(CONTRACT_TEXTS)


class _Faulty:
    """Wraps a backend: NaN probabilities for a row holding TRIGGER; an attention output (one-hot on the row's
    last code point) so that `explain` works on a format-2 bundle."""

    def __init__(self, backend):
        self._backend = backend
        self.name, self.threads, self.batch_size = backend.name, backend.threads, backend.batch_size
        self.has_attention = True

    def run(self, x):
        out = dict(self._backend.run(x))
        out["probabilities"] = out["probabilities"].copy()
        out["probabilities"][(x == ord(TRIGGER)).any(axis=1)] = np.nan
        attention = np.zeros(x.shape, dtype=np.float32)
        attention[np.arange(len(x)), np.maximum(np.count_nonzero(x, axis=1) - 1, 0)] = 1.0
        out["attention"] = attention
        return out


@pytest.fixture()
def faulty():
    c = kdedge_run.load(DEFAULT)
    c._backend = _Faulty(c._backend)
    return c


def test_a_non_finite_output_in_any_window_fails_that_text_only(faulty):
    late = LONG_DRUG_MESSAGE + TRIGGER  # the trigger is in the last window only
    with pytest.raises(InputError, match="NaN or infinite"):
        faulty.predict(late)
    with pytest.raises(InputError, match="^text 2: "):
        faulty.predict(["頭痛", LONG_DRUG_MESSAGE, late, "頭痛" + TRIGGER])
    each = faulty._predict_each(["頭痛", late, LONG_DRUG_MESSAGE])
    assert isinstance(each[1], InputError)
    assert each[0] == faulty.predict("頭痛") and each[2].labels == faulty.predict(LONG_DRUG_MESSAGE).labels


def test_explain_reads_the_window_of_the_highest_probability(faulty, clf):
    for text, expected in ((LONG_DRUG_MESSAGE, None), ("哈" * 300 + "我吃了止痛藥", 3)):
        windows = _window_texts(clf, text)
        best = [max(p.probabilities.values()) for p in clf.predict(windows)]
        top = int(np.argmax(best))
        assert expected is None or top == expected  # the drug is in the last window only
        # the fake attention is all on a row's last code point: explain names the top window's last character
        assert faulty.explain(text, n=1) == [(windows[top][-1], 1.0)]
        assert top == 0 or windows[top][-1] != windows[0][-1]  # (not what the first window would give)
    assert faulty.explain("頭痛發燒", n=1) == [("燒", 1.0)]


@pytest.mark.parametrize("windows,message", [
    ({"size": 64, "stride": 32, "max_windows": 4, "pool": "max"}, r"input\.windows\.size must equal input\.max_len"),
    ({"size": 128, "stride": 0, "max_windows": 4, "pool": "max"}, r"input\.windows\.stride must be"),
    ({"size": 128, "stride": 129, "max_windows": 4, "pool": "max"}, r"input\.windows\.stride must be"),
    ({"size": 128, "stride": 64, "max_windows": 0, "pool": "max"}, r"input\.windows\.max_windows must be"),
    ({"size": 128, "stride": 64, "max_windows": 10**6, "pool": "max"}, r"input\.windows\.max_windows must be"),
    ({"size": 128, "stride": 64, "max_windows": 4, "pool": "mean"}, r"input\.windows\.pool 'mean' unknown"),
    ([128, 64], r"input\.windows must be an object"),
])
def test_a_bad_window_rule_is_refused(tmp_path, windows, message):
    path = _copy(tmp_path, lambda m: m["input"].update(windows=windows))
    with pytest.raises(BundleError, match=message):
        kdedge_run.load(path)


def test_a_custom_window_rule_is_followed(tmp_path, clf):
    rule = {"size": 128, "stride": 128, "max_windows": 3, "pool": "max"}
    with pytest.raises(BundleError, match=r"golden.jsonl line \d+: the model gives"):  # edited after export
        kdedge_run.load(_copy(tmp_path, lambda m: m["input"].update(windows=rule)))
    path = _copy(tmp_path, lambda m: (m["input"].update(windows=rule), m.pop("golden")))  # as if exported so
    c = kdedge_run.load(path)
    p = c.predict(LONG_DRUG_MESSAGE)
    assert (p.tokens, p.windows, p.truncated) == (384, 3, True)
    parts = [LONG_DRUG_MESSAGE[:128], LONG_DRUG_MESSAGE[128:256], LONG_DRUG_MESSAGE[256:384]]
    assert np.array_equal(_probs(p), np.max([_probs(q) for q in clf.predict(parts)], axis=0))
