"""Conformance cases for readers of version-2 bundles (docs/bundle.md): copies of a bundle with one change each,
and the verdict the format gives the copy: "ok" (a reader loads it) or "refused" (a reader refuses it, naming the
file and the problem).

usage: python runtime/conformance/make_cases.py OUT [BUNDLE]

Writes OUT/<case>/, a bundle directory, for every case and OUT/cases.json, [{"case", "expect", "change"}] in
order. BUNDLE (default models/default) must be a format-2 bundle like the shipped one: its cases rename and
remove its last label, change its window rule and edit its golden vectors. A changed file gets its checksum
recomputed unless the case is about the checksum, so that the change itself is what a reader must catch. The
limits come from runtime/kdedge_run/limits.json, the file both readers are built with. Cases that swap the model
for a faulty one need Python `onnx` (runtime/js/test/faulty_model.py writes them). tests/test_conformance.py
loads every case with kdedge_run and with @kdedge/reader (runtime/conformance/verdicts.mjs) and compares.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_BUNDLE = REPO / "models" / "default"
LIMITS = {k: v["value"] for k, v in
          json.loads((REPO / "runtime" / "kdedge_run" / "limits.json").read_text("utf-8"))["limits"].items()}
FAULTY_MODEL = REPO / "runtime" / "js" / "test" / "faulty_model.py"
MANIFEST = "manifest.json"
WIDE = "\U00020BB7"  # 𠮷: one code point, two UTF-16 code units (limits count code points)


# ---- editing a copy ------------------------------------------------------------------------------------

def read_manifest(d: Path) -> dict:
    return json.loads((d / MANIFEST).read_text("utf-8"))


def write_manifest(d: Path, m: dict) -> None:
    """Write `m` as manifest.json the way the exporter does (NaN and ∞ as Python's json writes them)."""
    (d / MANIFEST).write_text(json.dumps(m, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def edit(change):
    """A case that changes the manifest object: `change(m)` edits it in place."""
    def apply(d: Path) -> None:
        m = read_manifest(d)
        change(m)
        write_manifest(d, m)
    return apply


def edit_text(change):
    """A case that changes manifest.json's text: `change(text)` returns the new text."""
    def apply(d: Path) -> None:
        (d / MANIFEST).write_text(change((d / MANIFEST).read_text("utf-8")), encoding="utf-8")
    return apply


def relist(d: Path, m: dict, *rels: str) -> None:
    """Record the size and SHA-256 of the files `rels` of `d` in `m["files"]`."""
    for rel in rels:
        data = (d / rel).read_bytes()
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def write_file(d: Path, rel: str, data: bytes, listed: bool = True) -> None:
    """Write bundle file `rel`; `listed`: its manifest entry recomputed."""
    path = d / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if listed:
        m = read_manifest(d)
        relist(d, m, rel)
        write_manifest(d, m)


def golden_rows(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / read_manifest(d)["golden"]["file"]).read_text("utf-8").splitlines()]


def write_golden(d: Path, m: dict, rows: list[dict]) -> None:
    """Golden vectors `rows` as the bundle's golden file, checksum and golden.texts recorded in `m`."""
    rel = m["golden"]["file"]
    (d / rel).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    m["golden"]["texts"] = len(rows)
    relist(d, m, rel)


def golden(change):
    """A case that changes the golden vectors: `change(rows)` edits the list of row objects in place."""
    def apply(d: Path) -> None:
        m = read_manifest(d)
        rows = golden_rows(d)
        texts = m["golden"]["texts"]
        change(rows)
        write_golden(d, m, rows)
        m["golden"]["texts"] = texts  # a change in count is the case's to make
        write_manifest(d, m)
    return apply


def golden_bytes(change):
    """A case that changes golden.jsonl's bytes (`change(data)` returns them), checksum recomputed."""
    def apply(d: Path) -> None:
        rel = read_manifest(d)["golden"]["file"]
        write_file(d, rel, change((d / rel).read_bytes()))
    return apply


def without_golden(change=None):
    """No golden vectors (key, listing and file removed), then `change(m)`: a case whose change alters what a
    correct reader computes for long texts is valid only without the vectors the bundle was written with."""
    def apply(d: Path) -> None:
        m = read_manifest(d)
        rel = m.pop("golden")["file"]
        del m["files"][rel]
        (d / rel).unlink()
        if change is not None:
            change(m)
        write_manifest(d, m)
    return apply


def rename_last_label(name: str):
    """The last label renamed to `name` everywhere a reader reads it: labels, label_descriptions, golden labels."""
    def apply(d: Path) -> None:
        m = read_manifest(d)
        old = m["labels"][-1]
        m["labels"][-1] = name
        if old in (m.get("label_descriptions") or {}):
            m["label_descriptions"][name] = m["label_descriptions"].pop(old)
        rows = golden_rows(d)
        for r in rows:
            r["labels"] = [name if x == old else x for x in r["labels"]]
        write_golden(d, m, rows)
        write_manifest(d, m)
    return apply


def drop_last_label(d: Path) -> None:
    """The last label removed from the manifest and the golden vectors (the model still outputs it)."""
    m = read_manifest(d)
    old = m["labels"].pop()
    m["thresholds"].pop()
    m["calibration"]["temperatures"].pop()
    (m.get("label_descriptions") or {}).pop(old, None)
    rows = golden_rows(d)
    for r in rows:
        r["probabilities"].pop()
        r["labels"] = [x for x in r["labels"] if x != old]
    write_golden(d, m, rows)
    write_manifest(d, m)


def faulty_model(variant: str):
    """The ONNX model swapped for runtime/js/test/faulty_model.py's `variant` of it, checksum recomputed."""
    def apply(d: Path) -> None:
        spec = importlib.util.spec_from_file_location("faulty_model", FAULTY_MODEL)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        rel = next(e["file"] for e in read_manifest(d)["models"] if e["format"] == "onnx")
        module.main(str(d / rel), str(d / rel), variant)
        m = read_manifest(d)
        relist(d, m, rel)
        write_manifest(d, m)
    return apply


def changed_byte(rel: str):
    """One byte of `rel` flipped, the manifest left as it was."""
    def apply(d: Path) -> None:
        data = bytearray((d / rel).read_bytes())
        data[len(data) // 2] ^= 1
        (d / rel).write_bytes(bytes(data))
    return apply


def first_model(m: dict) -> dict:
    return m["models"][0]


def deep_metrics(depth: int):
    """manifest.metrics.deep nested so that the manifest is `depth` levels deep (the manifest object is 1)."""
    return edit(lambda m: m["metrics"].__setitem__("deep", json.loads("[" * (depth - 2) + "]" * (depth - 2))))


def padded_manifest(size: int):
    """An unknown key holding a string that makes manifest.json exactly `size` bytes."""
    def apply(d: Path) -> None:
        m = read_manifest(d)
        m["x_padding"] = ""
        base = len((json.dumps(m, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
        m["x_padding"] = "a" * (size - base)
        write_manifest(d, m)
        assert (d / MANIFEST).stat().st_size == size
    return apply


def first_dropped_float(text: str) -> str:
    """manifest.json with input.dropped's second number (32) written as 32.0."""
    at = text.index('"dropped"')
    first = text.index("32", at)
    return text[:first] + "32.0" + text[first + 2:]


def _parent(m: dict, path: str):
    """The container holding the key at dotted `path` (list indices as numbers) and that key."""
    *parents, last = path.split(".")
    node = m
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node, int(last) if isinstance(node, list) else last


def set_in(path: str, value):
    """A manifest edit: the key at dotted `path` set to `value`."""
    def change(m):
        node, key = _parent(m, path)
        node[key] = value
    return edit(change)


def drop_key(path: str):
    """A manifest edit: the key at dotted `path` removed."""
    def change(m):
        node, key = _parent(m, path)
        del node[key]
    return edit(change)


def unlisted(rel: str, data: bytes = b"x"):
    def apply(d: Path) -> None:
        write_file(d, rel, data, listed=False)
    return apply


def listed_extra(d: Path) -> None:
    write_file(d, "notes/extra.txt", "額外的說明\n".encode("utf-8"))


def symlinked(d: Path) -> None:
    os.symlink("README.md", d / "README.link.md")


def manifest_symlink(d: Path) -> None:
    (d / MANIFEST).rename(d / "real.json")
    os.symlink("real.json", d / MANIFEST)


def fifo(d: Path) -> None:
    os.mkfifo(d / "pipe")


def missing(rel: str):
    def apply(d: Path) -> None:
        (d / rel).unlink()
    return apply


def grown(rel: str):
    def apply(d: Path) -> None:
        with open(d / rel, "ab") as f:
            f.write(b"\0")
    return apply


def bad_path(rel: str):
    return edit(lambda m: m["files"].__setitem__(rel, {"sha256": "0" * 64, "bytes": 1}))


def listed(m: dict, rel: str) -> dict:
    return m["files"][rel]


def windows(**change):
    return edit(lambda m: m["input"]["windows"].update(change))


def max_len_64(m: dict) -> None:
    """max_len 64 with a consistent window rule and input shapes: only the model (128 code points) disagrees."""
    m["input"]["max_len"] = 64
    m["input"]["windows"].update(size=64, stride=32)
    for e in m["models"]:
        e["input_shape"] = [e["input_shape"][0], 64]


def vocab_lines(change):
    """vocab.txt's lines changed by `change(lines)` (a list, edited in place), checksum recomputed."""
    def apply(d: Path) -> None:
        m = read_manifest(d)
        rel = m["vocab"]["file"]
        lines = (d / rel).read_text("utf-8").split("\n")[:-1]
        change(lines)
        write_file(d, rel, ("\n".join(lines) + "\n").encode("utf-8"))
    return apply


def golden_probability(tolerances: float):
    """The first golden vector's probability farthest from its threshold, 0 and 1 moved up by `tolerances` ×
    golden.tolerance (its labels stay those the model gives)."""
    def apply(d: Path) -> None:
        m = read_manifest(d)
        rows = golden_rows(d)
        p = rows[0]["probabilities"]
        i = max(range(len(p)), key=lambda j: min(abs(p[j] - m["thresholds"][j]), p[j], 1 - p[j]))
        p[i] += tolerances * m["golden"]["tolerance"]
        write_golden(d, m, rows)
        write_manifest(d, m)
    return apply


def ranges(n: int) -> list[list[int]]:
    """`n` sorted disjoint code point ranges from 0."""
    return [[2 * i, 2 * i] for i in range(n)]


# ---- the cases -------------------------------------------------------------------------------------------

OK, REFUSED = "ok", "refused"
L = LIMITS

# (case, verdict, change as a sentence, how): every case starts from a fresh copy of the bundle
CASES = [
    ("unchanged", OK, "the bundle as shipped", None),
    ("manifest-compact", OK, "manifest.json written without indentation",
     lambda d: (d / MANIFEST).write_text(json.dumps(read_manifest(d)), encoding="utf-8")),
    ("manifest-unknown-key", OK, "an unknown top-level key (a later version's)", set_in("x_future", {"a": [1, 2.5]})),
    ("manifest-duplicate-key", OK, "a key given twice: the last one counts (format_version 2.0, then 2)",
     edit_text(lambda t: t.replace('"format_version": 2,', '"format_version": 2.0, "format_version": 2,', 1))),
    ("manifest-duplicate-key-float-last", REFUSED, "a key given twice, the last one 2.0",
     edit_text(lambda t: t.replace('"format_version": 2,', '"format_version": 2, "format_version": 2.0,', 1))),
    ("manifest-not-json", REFUSED, "manifest.json not JSON", edit_text(lambda t: t[:-3])),
    ("manifest-not-utf8", REFUSED, "manifest.json not UTF-8",
     lambda d: (d / MANIFEST).write_bytes((d / MANIFEST).read_bytes().replace(b"BODY", b"B\xffDY", 1))),
    ("manifest-bom", REFUSED, "manifest.json starting with a UTF-8 byte order mark", edit_text(lambda t: "\ufeff" + t)),
    ("manifest-array", REFUSED, "manifest.json a JSON array", edit_text(lambda t: f"[{t}]")),
    ("manifest-nan", REFUSED, "NaN in an informative key (not JSON)", set_in("metrics.nan", float("nan"))),
    ("manifest-infinity", REFUSED, "Infinity in an informative key (not JSON)", set_in("metrics.inf", float("inf"))),
    ("manifest-depth-at-limit", OK, f"nested {L['max_json_depth']} levels deep", deep_metrics(L["max_json_depth"])),
    ("manifest-depth-over-limit", REFUSED, f"nested {L['max_json_depth'] + 1} levels deep",
     deep_metrics(L["max_json_depth"] + 1)),
    ("manifest-int-digits-at-limit", OK, f"an informative integer of {L['max_int_digits']} digits",
     edit_text(lambda t: t.replace('"metrics": {', '"metrics": {"big": %s, ' % ("9" * L["max_int_digits"]), 1))),
    ("manifest-int-digits-over-limit", REFUSED, f"an informative integer of {L['max_int_digits'] + 1} digits",
     edit_text(lambda t: t.replace('"metrics": {', '"metrics": {"big": %s, ' % ("9" * (L["max_int_digits"] + 1)), 1))),
    ("manifest-bytes-at-limit", OK, f"manifest.json of exactly {L['max_manifest_bytes']} bytes",
     padded_manifest(L["max_manifest_bytes"])),
    ("manifest-bytes-over-limit", REFUSED, f"manifest.json of {L['max_manifest_bytes'] + 1} bytes",
     padded_manifest(L["max_manifest_bytes"] + 1)),
    ("manifest-missing", REFUSED, "no manifest.json", missing(MANIFEST)),
    ("manifest-symlink", REFUSED, "manifest.json a symlink", manifest_symlink),
    ("format-wrong", REFUSED, 'format "other-bundle"', set_in("format", "other-bundle")),
    ("format-missing", REFUSED, "no format", drop_key("format")),
    ("format-version-1", REFUSED, "format_version 1 (a version-2 manifest read as version 1)",
     set_in("format_version", 1)),
    ("format-version-3", REFUSED, "format_version 3", set_in("format_version", 3)),
    ("format-version-string", REFUSED, 'format_version "2"', set_in("format_version", "2")),
    ("format-version-float", REFUSED, "format_version 2.0", set_in("format_version", 2.0)),
    # files
    ("files-not-object", REFUSED, "files a list", set_in("files", [])),
    ("files-entry-not-object", REFUSED, "a files entry a string",
     edit(lambda m: m["files"].__setitem__("README.md", "x"))),
    ("files-sha256-not-hex", REFUSED, "a sha256 of 64 characters, not hex",
     edit(lambda m: listed(m, "README.md").update(sha256="z" * 64))),
    ("files-sha256-short", REFUSED, "a sha256 of 63 hex digits",
     edit(lambda m: listed(m, "README.md").update(sha256=listed(m, "README.md")["sha256"][:63]))),
    ("files-sha256-upper-case", OK, "a sha256 in upper-case hex",
     edit(lambda m: listed(m, "README.md").update(sha256=listed(m, "README.md")["sha256"].upper()))),
    ("files-sha256-wrong", REFUSED, "a sha256 of another content",
     edit(lambda m: listed(m, "README.md").update(sha256="0" * 64))),
    ("files-bytes-negative", REFUSED, "a bytes of -1", edit(lambda m: listed(m, "README.md").update(bytes=-1))),
    ("files-bytes-float", REFUSED, "a bytes written as a float (6226.0)",
     edit(lambda m: listed(m, "README.md").update(bytes=float(listed(m, "README.md")["bytes"])))),
    ("files-bytes-string", REFUSED, "a bytes a string",
     edit(lambda m: listed(m, "README.md").update(bytes=str(listed(m, "README.md")["bytes"])))),
    ("files-bytes-over-limit", REFUSED, f"a bytes of {L['max_file_bytes'] + 1}",
     edit(lambda m: listed(m, "README.md").update(bytes=L["max_file_bytes"] + 1))),
    ("files-too-many", REFUSED, f"{L['max_files'] + 1} files listed",
     edit(lambda m: m["files"].update({f"f{i}": {"sha256": "0" * 64, "bytes": 1} for i in range(L["max_files"] + 1)}))),
    ("files-path-dotdot", REFUSED, 'a listed path "../outside"', bad_path("../outside")),
    ("files-path-inner-dotdot", REFUSED, 'a listed path "a/../README.md"', bad_path("a/../README.md")),
    ("files-path-absolute", REFUSED, 'a listed path "/etc/hostname"', bad_path("/etc/hostname")),
    ("files-path-backslash", REFUSED, 'a listed path "a\\\\b"', bad_path("a\\b")),
    ("files-path-drive", REFUSED, 'a listed path "C:x"', bad_path("C:x")),
    ("files-path-dot", REFUSED, 'a listed path "./README.md"', bad_path("./README.md")),
    ("files-path-empty", REFUSED, "a listed path \"\"", bad_path("")),
    ("files-lists-manifest", REFUSED, "manifest.json listed in files", bad_path(MANIFEST)),
    ("file-unlisted", REFUSED, "a file not listed in files", unlisted("extra.bin")),
    ("file-unlisted-nested", REFUSED, "a file in a subdirectory not listed", unlisted("sub/extra.bin")),
    ("file-listed-nested", OK, "a listed file in a subdirectory", listed_extra),
    ("empty-directory", OK, "an empty subdirectory", lambda d: (d / "empty").mkdir()),
    ("file-symlink", REFUSED, "an unlisted symlink to a listed file", symlinked),
    ("file-fifo", REFUSED, "a named pipe in the bundle", fifo),
    ("file-missing", REFUSED, "a listed file missing", missing("label_f1.png")),
    ("file-changed", REFUSED, "one byte of the model changed", changed_byte("model.onnx")),
    ("file-changed-readme", REFUSED, "one byte of README.md changed", changed_byte("README.md")),
    ("file-grown", REFUSED, "the model one byte longer than listed", grown("model.onnx")),
    # labels, thresholds, calibration, abstention, descriptions
    ("labels-not-list", REFUSED, "labels a string", set_in("labels", "BODY")),
    ("labels-empty", REFUSED, "labels empty", edit(lambda m: m.update(labels=[], thresholds=[]))),
    ("labels-duplicate", REFUSED, "a label twice", set_in("labels.1", "BODY")),
    ("labels-empty-name", REFUSED, 'a label ""', set_in("labels.1", "")),
    ("labels-non-string", REFUSED, "a label 7", set_in("labels.1", 7)),
    ("label-chars-at-limit", OK, f"a label of {L['max_label_chars']} code points (astral: twice as many UTF-16 units)",
     rename_last_label(WIDE * L["max_label_chars"])),
    ("label-chars-over-limit", REFUSED, f"a label of {L['max_label_chars'] + 1} code points",
     rename_last_label("S" * (L["max_label_chars"] + 1))),
    ("label-count-model-disagrees", REFUSED, "the last label removed (the model outputs one more)", drop_last_label),
    ("thresholds-missing", REFUSED, "no thresholds", drop_key("thresholds")),
    ("thresholds-count", REFUSED, "one threshold fewer than labels", edit(lambda m: m["thresholds"].pop())),
    ("thresholds-above-1", REFUSED, "a threshold 1.5", set_in("thresholds.0", 1.5)),
    ("thresholds-negative", REFUSED, "a threshold -0.1", set_in("thresholds.0", -0.1)),
    ("thresholds-string", REFUSED, 'a threshold "0.5"', set_in("thresholds.0", "0.5")),
    ("thresholds-bool", REFUSED, "a threshold true", set_in("thresholds.0", True)),
    ("calibration-missing", REFUSED, "no calibration", drop_key("calibration")),
    ("calibration-method", REFUSED, 'calibration.method "platt"', set_in("calibration.method", "platt")),
    ("calibration-temperatures-count", REFUSED, "one temperature fewer than labels",
     edit(lambda m: m["calibration"]["temperatures"].pop())),
    ("calibration-temperature-zero", REFUSED, "a temperature 0", set_in("calibration.temperatures.0", 0)),
    ("calibration-temperature-over-limit", REFUSED, f"a temperature {L['max_temperature'] * 2}",
     set_in("calibration.temperatures.0", L["max_temperature"] * 2)),
    ("calibration-temperature-integer", OK, "a temperature 1 (an integer: a number)",
     set_in("calibration.temperatures.0", 1)),
    ("calibration-not-in-graph", REFUSED, "calibration.in_graph false (version 2 models calibrate in the graph)",
     set_in("calibration.in_graph", False)),
    ("abstain-missing", REFUSED, "no abstain", drop_key("abstain")),
    ("abstain-null", REFUSED, "abstain null", set_in("abstain", None)),
    ("abstain-min-coverage-missing", REFUSED, "abstain without min_coverage", set_in("abstain", {})),
    ("abstain-min-coverage-above-1", REFUSED, "abstain.min_coverage 1.5", set_in("abstain.min_coverage", 1.5)),
    ("descriptions-missing", OK, "no label_descriptions", drop_key("label_descriptions")),
    ("descriptions-null", OK, "label_descriptions null", set_in("label_descriptions", None)),
    ("descriptions-some", OK, "descriptions for some labels only",
     edit(lambda m: m["label_descriptions"].pop(m["labels"][0]))),
    ("descriptions-unknown-label", REFUSED, "a description for a label not in labels",
     set_in("label_descriptions.NOPE", "not a label")),
    ("descriptions-non-string", REFUSED, "a description 5", set_in("label_descriptions.BODY", 5)),
    ("descriptions-null-value", REFUSED, "a description null", set_in("label_descriptions.BODY", None)),
    ("descriptions-not-object", REFUSED, "label_descriptions a list", set_in("label_descriptions", ["x"])),
    ("descriptions-chars-at-limit", OK, f"a description of {L['max_description_chars']} code points (astral)",
     set_in("label_descriptions.BODY", WIDE * L["max_description_chars"])),
    ("descriptions-chars-over-limit", REFUSED, f"a description of {L['max_description_chars'] + 1} code points",
     set_in("label_descriptions.BODY", "d" * (L["max_description_chars"] + 1))),
    # input
    ("input-missing", REFUSED, "no input", drop_key("input")),
    ("input-kind", REFUSED, 'input.kind "sequence"', set_in("input.kind", "sequence")),
    ("input-dtype-missing", REFUSED, "no input.dtype", drop_key("input.dtype")),
    ("input-dtype", REFUSED, 'input.dtype "int64"', set_in("input.dtype", "int64")),
    ("input-pad-missing", REFUSED, "no input.pad", drop_key("input.pad")),
    ("input-pad-1", REFUSED, "input.pad 1", set_in("input.pad", 1)),
    ("input-pad-false", REFUSED, "input.pad false", set_in("input.pad", False)),
    ("input-pad-float", REFUSED, "input.pad 0.0", set_in("input.pad", 0.0)),
    ("max-len-float", REFUSED, "input.max_len 128.0", set_in("input.max_len", 128.0)),
    ("max-len-zero", REFUSED, "input.max_len 0", set_in("input.max_len", 0)),
    ("max-len-string", REFUSED, 'input.max_len "128"', set_in("input.max_len", "128")),
    ("max-len-over-limit", REFUSED, f"input.max_len {L['max_text_input'] + 1}",
     set_in("input.max_len", L["max_text_input"] + 1)),
    ("max-len-model-disagrees", REFUSED, "input.max_len 64, window rule and input shapes to match (the model reads 128)",
     edit(max_len_64)),
    ("dropped-unsorted", REFUSED, "input.dropped ranges out of order",
     edit(lambda m: m["input"]["dropped"].insert(1, m["input"]["dropped"].pop(2)))),
    ("dropped-overlapping", REFUSED, "input.dropped ranges overlapping ([0, 32] then [30, 40])",
     edit(lambda m: m["input"]["dropped"].insert(1, [30, 40]))),
    ("dropped-adjacent-duplicate", REFUSED, "an input.dropped range twice",
     edit(lambda m: m["input"]["dropped"].insert(1, list(m["input"]["dropped"][0])))),
    ("dropped-reversed", REFUSED, "an input.dropped range [160, 127]",
     edit(lambda m: m["input"]["dropped"].__setitem__(1, [160, 127]))),
    ("dropped-not-from-0", REFUSED, "input.dropped not starting at code point 0",
     edit(lambda m: m["input"]["dropped"].__setitem__(0, [1, 32]))),
    ("dropped-empty", REFUSED, "input.dropped empty", set_in("input.dropped", [])),
    ("dropped-over-max-code-point", REFUSED, "an input.dropped range ending past U+10FFFF",
     edit(lambda m: m["input"]["dropped"].append([L["max_code_point"], L["max_code_point"] + 1]))),
    ("dropped-float", REFUSED, "an input.dropped bound written as 32.0", edit_text(first_dropped_float)),
    ("dropped-not-pairs", REFUSED, "an input.dropped range of three numbers",
     edit(lambda m: m["input"]["dropped"].__setitem__(1, [127, 150, 160]))),
    ("dropped-too-many", REFUSED, f"{L['max_dropped_ranges'] + 1} input.dropped ranges",
     set_in("input.dropped", ranges(L["max_dropped_ranges"] + 1))),
    # windows (docs/bundle.md "Long texts (windows)")
    ("windows-missing", REFUSED, "no input.windows: the long golden texts are read as one window",
     drop_key("input.windows")),
    ("windows-missing-no-golden", OK, "no input.windows and no golden vectors",
     without_golden(lambda m: m["input"].pop("windows"))),
    ("windows-null-no-golden", OK, "input.windows null and no golden vectors",
     without_golden(lambda m: m["input"].update(windows=None))),
    ("windows-widest-no-golden", OK, f"stride 1 and max_windows {L['max_windows']}, no golden vectors",
     without_golden(lambda m: m["input"]["windows"].update(stride=1, max_windows=L["max_windows"]))),
    ("windows-size", REFUSED, "input.windows.size 129 (not max_len)", windows(size=129)),
    ("windows-size-float", REFUSED, "input.windows.size 128.0", windows(size=128.0)),
    ("windows-stride-0", REFUSED, "input.windows.stride 0", windows(stride=0)),
    ("windows-stride-above-size", REFUSED, "input.windows.stride 129", windows(stride=129)),
    ("windows-max-windows-0", REFUSED, "input.windows.max_windows 0", windows(max_windows=0)),
    ("windows-max-windows-over-limit", REFUSED, f"input.windows.max_windows {L['max_windows'] + 1}",
     windows(max_windows=L["max_windows"] + 1)),
    ("windows-max-windows-fraction", REFUSED, "input.windows.max_windows 1.5", windows(max_windows=1.5)),
    ("windows-pool", REFUSED, 'input.windows.pool "mean"', windows(pool="mean")),
    ("windows-not-object", REFUSED, "input.windows a list", set_in("input.windows", [128, 64])),
    # vocab, embeddings, segmenter
    ("vocab-missing", REFUSED, "no vocab", drop_key("vocab")),
    ("vocab-size", REFUSED, "vocab.size one less than vocab.txt's lines",
     edit(lambda m: m["vocab"].update(size=m["vocab"]["size"] - 1))),
    ("vocab-size-float", REFUSED, "vocab.size written as a float", edit(lambda m: m["vocab"].update(size=float(m["vocab"]["size"])))),
    ("vocab-file-unlisted", REFUSED, "vocab.file a file not listed", set_in("vocab.file", "nope.txt")),
    ("vocab-first-line", REFUSED, "vocab.txt's line 0 not <pad>", vocab_lines(lambda lines: lines.__setitem__(0, "<PAD>"))),
    ("vocab-duplicate", REFUSED, "a token twice in vocab.txt", vocab_lines(lambda lines: lines.__setitem__(3, lines[2]))),
    ("vocab-bom", REFUSED, "vocab.txt starting with a byte order mark",
     vocab_lines(lambda lines: lines.__setitem__(0, "\ufeff" + lines[0]))),
    ("embeddings-missing", REFUSED, "no embeddings", drop_key("embeddings")),
    ("segmenter-not-object", REFUSED, 'segmenter "char"', set_in("segmenter", "char")),
    # models
    ("models-empty", REFUSED, "models empty", set_in("models", [])),
    ("models-not-list", REFUSED, "models an object", edit(lambda m: m.update(models=first_model(m)))),
    ("models-too-many", REFUSED, f"{L['max_models'] + 1} model entries",
     edit(lambda m: m.update(models=[copy.deepcopy(first_model(m)) for _ in range(L["max_models"] + 1)]))),
    ("models-at-limit", OK, f"{L['max_models']} model entries (the same model)",
     edit(lambda m: m.update(models=[copy.deepcopy(first_model(m)) for _ in range(L["max_models"])]))),
    ("models-unknown-format", REFUSED, 'the model entry\'s format "pytorch"', set_in("models.0.format", "pytorch")),
    ("models-second-unknown-format", REFUSED, 'a second model entry of format "pytorch"',
     edit(lambda m: m["models"].append({**copy.deepcopy(first_model(m)), "format": "pytorch"}))),
    ("models-file-unlisted", REFUSED, "models[0].file not listed", set_in("models.0.file", "other.onnx")),
    ("models-input-dtype", REFUSED, 'models[0].input_dtype "float32"', set_in("models.0.input_dtype", "float32")),
    ("models-input-dtype-missing", REFUSED, "no models[0].input_dtype", drop_key("models.0.input_dtype")),
    ("models-input-name", REFUSED, 'models[0].input_name "text" (the model\'s is "codepoints")',
     set_in("models.0.input_name", "text")),
    ("models-outputs-known-missing", REFUSED, "no models[0].outputs.known", drop_key("models.0.outputs.known")),
    ("models-outputs-known-wrong", REFUSED, 'models[0].outputs.known "count" (no such output)',
     set_in("models.0.outputs.known", "count")),
    ("models-outputs-attention-wrong", REFUSED, 'models[0].outputs.attention "attention" (the model has none)',
     set_in("models.0.outputs.attention", "attention")),
    ("models-input-shape", REFUSED, "models[0].input_shape [null, 64]", set_in("models.0.input_shape", [None, 64])),
    ("models-input-shape-batch", REFUSED, "models[0].input_shape [2, 128]", set_in("models.0.input_shape", [2, 128])),
    ("models-input-shape-float", REFUSED, "models[0].input_shape [null, 128.0]",
     set_in("models.0.input_shape", [None, 128.0])),
    # golden vectors (docs/bundle.md "Golden vectors")
    ("golden-missing", OK, "no golden vectors (key, listing and file)", without_golden()),
    ("golden-null", OK, "golden null (as absent), golden.jsonl still listed", set_in("golden", None)),
    ("golden-file-unlisted", REFUSED, "golden.file not listed", set_in("golden.file", "other.jsonl")),
    ("golden-texts-zero", REFUSED, "golden.texts 0", set_in("golden.texts", 0)),
    ("golden-texts-over-limit", REFUSED, f"golden.texts {L['max_golden_texts'] + 1}",
     set_in("golden.texts", L["max_golden_texts"] + 1)),
    ("golden-texts-float", REFUSED, "golden.texts written as a float", edit(lambda m: m["golden"].update(texts=float(m["golden"]["texts"])))),
    ("golden-texts-count", REFUSED, "golden.texts one more than golden.jsonl's lines",
     edit(lambda m: m["golden"].update(texts=m["golden"]["texts"] + 1))),
    ("golden-tolerance-zero", REFUSED, "golden.tolerance 0", set_in("golden.tolerance", 0)),
    ("golden-tolerance-at-limit", OK, f"golden.tolerance {L['max_golden_tolerance']}",
     set_in("golden.tolerance", L["max_golden_tolerance"])),
    ("golden-tolerance-over-limit", REFUSED, f"golden.tolerance {L['max_golden_tolerance'] * 2}",
     set_in("golden.tolerance", L["max_golden_tolerance"] * 2)),
    ("golden-within-tolerance", OK, "a golden probability moved by half the tolerance", golden_probability(0.5)),
    ("golden-beyond-tolerance", REFUSED, "a golden probability moved by twice the tolerance", golden_probability(2)),
    ("golden-labels-changed", REFUSED, "a golden vector's labels without its first label",
     golden(lambda rows: rows[0].update(labels=rows[0]["labels"][1:]))),
    ("golden-judged-flipped", REFUSED, "a golden vector's judged flipped",
     golden(lambda rows: rows[0].update(judged=not rows[0]["judged"]))),
    ("golden-unknown-label", REFUSED, "a golden vector naming a label not in labels",
     golden(lambda rows: rows[0].update(labels=["NOPE"]))),
    ("golden-probabilities-count", REFUSED, "a golden vector with one probability fewer",
     golden(lambda rows: rows[0]["probabilities"].pop())),
    ("golden-text-empty", REFUSED, 'a golden vector\'s text ""', golden(lambda rows: rows[0].update(text=""))),
    ("golden-line-removed", REFUSED, "a golden line removed (golden.texts unchanged)", golden(lambda rows: rows.pop())),
    ("golden-not-json", REFUSED, "a golden line not JSON",
     golden_bytes(lambda data: data.replace(b"{", b"{{", 1))),
    ("golden-nan", REFUSED, "NaN in a golden line",
     golden_bytes(lambda data: data.replace(b'"probabilities": [', b'"probabilities": [NaN, ', 1))),
    ("golden-bom", REFUSED, "golden.jsonl starting with a byte order mark",
     golden_bytes(lambda data: "\ufeff".encode("utf-8") + data)),
    ("golden-not-utf8", REFUSED, "golden.jsonl not UTF-8", golden_bytes(lambda data: data.replace(b"{", b"\xff{", 1))),
    ("golden-crlf", OK, "golden.jsonl with CRLF line ends", golden_bytes(lambda data: data.replace(b"\n", b"\r\n"))),
    # the model
    ("model-constant", REFUSED, "the model swapped for one giving 0.5 for every label", faulty_model("p=0.5")),
    ("model-probability-above-1", REFUSED, "the model swapped for one giving probability 5", faulty_model("p=5")),
    ("model-probability-nan", REFUSED, "the model swapped for one giving NaN", faulty_model("p=nan")),
    ("model-known-high", REFUSED, "the model's known output 1000 too high", faulty_model("known+1000")),
    ("model-known-negative", REFUSED, "the model's known output 1 too low (negative on padding)", faulty_model("known-1")),
    ("model-transposed", REFUSED, "the model's probabilities transposed ([labels, batch])", faulty_model("transpose")),
    ("model-flat", REFUSED, "the model's probabilities flattened", faulty_model("flat")),
]


def generate(out: str | os.PathLike, bundle: str | os.PathLike = DEFAULT_BUNDLE) -> list[dict]:
    """Write every case under `out` (created if need be) and `out`/cases.json; returns the cases' list."""
    source, out = Path(bundle).resolve(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [name for name, *_ in CASES]
    if len(set(names)) != len(names):
        raise SystemExit("make_cases.py: duplicate case names")
    listing = []
    for name, expect, change, how in CASES:
        d = out / name
        shutil.copytree(source, d)  # copies: readers refuse symlinks
        if how is not None:
            how(d)
        listing.append({"case": name, "expect": expect, "change": change})
    (out / "cases.json").write_text(json.dumps(listing, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return listing


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    cases = generate(*sys.argv[1:])
    print(f"{len(cases)} cases in {sys.argv[1]}: {sum(c['expect'] == OK for c in cases)} ok, "
          f"{sum(c['expect'] == REFUSED for c in cases)} refused")
