"""The bundle's model card (README.md) and per-label F1 chart (label_f1.png)."""
from __future__ import annotations

import io
import warnings

from kdedge_run.text import escape

LIMITS = (
    "Its labels describe what a text talks about, as the training data labelled it; they are not decisions. "
    "Use it where a wrong or missing label is cheap, or with a human reviewing anything that matters."
)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _html(text: str) -> str:
    """`text` for Markdown prose: '&', '<' and '>' as entities, so that GitHub, npm or a viewer shows a label
    or description such as `<img src=x onerror=...>` or `<script>` as text instead of rendering raw HTML."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _text(text: str) -> str:
    """Prose from the manifest or the run (labels, descriptions, intended use, notes): unprintable
    characters escaped, then HTML."""
    return _html(escape(str(text)))


def _code(text) -> str:
    """Text for inside a Markdown code span (shown literally): unprintable characters escaped and backticks
    replaced, so that it cannot close the span and be read as Markdown or HTML."""
    return escape(str(text)).replace("`", "'")


def _cell(text: str) -> str:
    """A Markdown table cell: unprintable characters, '|' and '\\' escaped (a label cannot break the table),
    then HTML ('&', '<', '>')."""
    return _html(escape(text, also="\\|").replace("\\x7c", "\\|"))


def label_f1_png(labels: list[str], f1_05: dict, f1_tuned: dict, title: str, f1_test: dict | None = None) -> bytes:
    """A horizontal bar chart of per-label F1 as PNG bytes: validation at 0.5 and at the tuned thresholds, and
    the held-out test split at the tuned thresholds when given; the legend sits below the bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    series = [("validation, threshold 0.5", f1_05, "#9aa7b8"), ("validation, tuned thresholds", f1_tuned, "#2a6fb0")]
    if f1_test is not None:
        series.append(("held-out test, tuned thresholds", f1_test, "#d9822b"))
    height = 1.8 + 0.15 * len(series) * len(labels)
    fig = Figure(figsize=(7, height), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    pos = list(range(len(labels)))
    bar = 0.8 / len(series)
    for i, (name, f1, color) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * bar
        ax.barh([p + offset for p in pos], [f1[lab] for lab in labels], height=bar, label=name, color=color)
    ax.set_yticks(pos)
    ax.set_yticklabels([escape(lab).replace("$", r"\$") for lab in labels])  # no mathtext
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(series), fontsize="small", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # labels in scripts the default font lacks: boxes, not errors
        warnings.simplefilter("ignore")
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def model_card(manifest: dict, run_info: dict) -> str:
    """README.md for the bundle, from the final manifest (except `files`) and facts about the run."""
    sections = (_summary(manifest, run_info) + _limits(manifest, run_info) + _data(manifest, run_info)
                + _test(manifest) + _run_table(run_info) + _meanings(manifest) + _per_label(manifest)
                + _calibration(manifest) + _parity(manifest) + _segmentation(manifest) + _notes(manifest))
    return "\n".join(sections)


def _summary(m: dict, run_info: dict) -> list[str]:
    out = [f"# kdedge model: {_text(m['architecture'])} ({_text(m['model_kind'])})", ""]
    how = ("distilled from a teacher model" if m["model_kind"] == "kd" else
           "trained on the labels alone (the plain student of a kdedge run)")
    return out + [f"Multi-label Chinese text classifier with {len(m['labels'])} labels, {how}, "
                  f"by kdedge {m['kdedge_version']} and exported on {m['created']} as a kdedge bundle "
                  f"(format version {m['format_version']}, see docs/bundle.md). Run it with `kdedge-run predict "
                  "--model <this directory> \"文本\"` or `kdedge_run.load(path).predict(text)`.", ""]


def _limits(m: dict, run_info: dict) -> list[str]:
    labels, tuned = m["labels"], m["metrics"]["tuned"]
    data_name = _code(((run_info.get("data") or {}).get("path") or "its training data").rsplit("/", 1)[-1])
    intended = m.get("intended_use") or (f"tagging and routing Chinese texts like those of `{data_name}` "
                                         "(what a text mentions).")
    out = ["## Intended use and limits", "", f"**Intended use:** {_text(intended)}", "", LIMITS, "",
           "- The scores are calibrated probabilities on the validation split of the training data; on text "
           "from another source, time or register they may be miscalibrated and labels may be missed.",
           _long_texts(m["input"]),
           "- Thresholds and temperatures were fitted on the same validation split the metrics below are "
           "measured on, so those metrics are optimistic; judge the model on your own held-out data.",
           f"- {'Characters' if m['segmenter']['type'] == 'char' else 'Words'} not seen in training map to one "
           "out-of-vocabulary id; rare labels (few validation positives) have unreliable thresholds (below the "
           "run's minimum support they keep 0.5)."]
    if m.get("abstain"):
        out.append(f"- A text of which less than {100 * m['abstain']['min_coverage']:.0f}% is in the vocabulary "
                   "(or nothing) is not judged: it gets no labels and `judged: false`, whatever its scores.")
    weak = [_text(lab) for lab in labels if tuned["per_label_f1"][lab] < 0.5]
    low = [f"{_text(lab)} ({t:.2f})" for lab, t in zip(labels, m["thresholds"]) if t < 0.15]
    if weak:
        out.append(f"- Weak labels (validation F1 below 50% at the tuned thresholds): {', '.join(weak)}; treat "
                   "their predictions as hints only.")
    if low:
        out.append(f"- Very low thresholds, so these labels are predicted often and with many false positives: "
                   f"{', '.join(low)}.")
    out.append("")
    return out


def _data(m: dict, run_info: dict) -> list[str]:
    metrics = m["metrics"]
    out = ["## Data", ""]
    data = run_info.get("data") or {}
    texts = run_info.get("texts") or {}
    out += [f"- Training data: `{_code(data.get('path', '?'))}` (sha256 `{_code(str(data.get('sha256', '?'))[:16])}…`, "
            f"{data.get('texts', '?')} texts)",
            f"- Split: {texts.get('train', '?')} training texts, {texts.get('val', metrics['texts'])} validation texts "
            "(validation: epoch selection, calibration, thresholds, metrics and parity)",
            f"- Training configuration: architecture `{m['architecture']}`, input {_input_desc(m['input'])}, "
            f"vectors {m['embeddings']['dim']}-d ({m['embeddings']['dtype']} in the bundle), "
            f"vocabulary {m['vocab']['size']} tokens", ""]
    return out


def _test(m: dict) -> list[str]:
    labels, test = m["labels"], m.get("test_metrics")
    if not test:
        return []
    return ["## Held-out test split", "",
            f"{test['texts']} labelled texts that training never saw, through this bundle end to end at its "
            f"thresholds ({test['not_judged']} not judged, counted as no labels):", "",
            "| test (%) | micro-F1 | macro-F1 | weighted-F1 | subset accuracy |", "|---|---:|---:|---:|---:|",
            f"| bundle | {_pct(test['micro_f1'])} | {_pct(test['macro_f1'])} | {_pct(test['weighted_f1'])} | "
            f"{_pct(test['subset_accuracy'])} |", "",
            "| label | " + " | ".join(_cell(lab) for lab in labels) + " |",
            "|---|" + "---:|" * len(labels),
            "| test F1 | " + " | ".join(_pct(test["per_label_f1"][lab]) for lab in labels) + " |", ""]


def _meanings(m: dict) -> list[str]:
    described = m.get("label_descriptions") or {}
    if not described:
        return []
    return (["## What the labels mean", "", "| label | meaning |", "|---|---|"]
            + [f"| {_cell(lab)} | {_cell(described.get(lab, ''))} |" for lab in m["labels"]] + [""])


def _per_label(m: dict) -> list[str]:
    labels, metrics, cal = m["labels"], m["metrics"], m["calibration_report"]
    at05, tuned = metrics["at_0.5"], metrics["tuned"]
    out = ["## Labels, thresholds and validation F1", "",
           "| label | validation positives | threshold | temperature | F1 @0.5 | F1 tuned | ECE before | ECE after |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for j, lab in enumerate(labels):
        src = " (file)" if metrics["threshold_source"].get(lab) == "file" else ""
        out.append(f"| {_cell(lab)} | {cal['positives'][lab]} | {m['thresholds'][j]:.3f}{src} | "
                   f"{m['calibration']['temperatures'][j]:.3f} | {_pct(at05['per_label_f1'][lab])} | "
                   f"{_pct(tuned['per_label_f1'][lab])} | {cal['ece_before'][lab]:.3f} | {cal['ece_after'][lab]:.3f} |")
    out += ["", "![per-label F1](label_f1.png)", "",
            "| validation (%) | micro-F1 | macro-F1 | weighted-F1 | subset accuracy |", "|---|---:|---:|---:|---:|",
            f"| at 0.5 | {_pct(at05['micro_f1'])} | {_pct(at05['macro_f1'])} | {_pct(at05['weighted_f1'])} | "
            f"{_pct(at05['subset_accuracy'])} |",
            f"| tuned thresholds | {_pct(tuned['micro_f1'])} | {_pct(tuned['macro_f1'])} | "
            f"{_pct(tuned['weighted_f1'])} | {_pct(tuned['subset_accuracy'])} |", ""]
    return out


def _calibration(m: dict) -> list[str]:
    cal = m["calibration_report"]
    return ["## Calibration", "",
            f"One temperature per label (p = sigmoid(logit / T)), fitted on the validation logits by log-loss; "
            f"thresholds were tuned on the calibrated probabilities. Mean expected calibration error "
            f"({cal['bins']} bins): {cal['mean_ece_before']:.4f} before, {cal['mean_ece_after']:.4f} after.", ""]


def _parity(m: dict) -> list[str]:
    parity = m["parity"]
    out = ["## Parity (export-time check)", "",
           f"{parity['texts']} validation texts end to end through kdedge-run (segmentation → ids → vectors → "
           f"model file → calibrated probabilities) against the trained Keras model. fp32 models with fp32 "
           f"vectors must agree within {parity['fp32_tolerance']:g}; quantised rows show the expected drift. "
           "ms/text: median single-text latency at export (1 thread, machine-dependent); the manifest lists "
           "the faster shipped model first.", "",
           "| format | precision | vectors | size | max abs Δp | flipped decisions | macro-F1 | Δ macro-F1 "
           "| ms/text | shipped |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in parity["results"]:
        out.append(f"| {r['format']} | {r['precision']} | {r['vectors']} | {_size(r['bytes'])} | "
                   f"{r['max_abs_dp']:.2e} | {r['flipped_decisions']} | {_pct(r['macro_f1'])} | "
                   f"{100 * r['macro_f1_change']:+.2f} | {r.get('latency_ms', 0):.2f} | "
                   f"{'yes' if r['shipped'] else 'no'} |")
    return out


def _segmentation(m: dict) -> list[str]:
    seg, agree = m["segmenter"], m["segmentation_agreement"]
    out = ["", "## Segmentation", ""]
    if m["format_version"] == 2:
        out.append("Characters: the app passes the text's Unicode code points (whitespace and control characters, "
                   "listed in the manifest, removed; read in windows of "
                   f"{m['input']['max_len']}, docs/bundle.md \"Long texts (windows)\"); normalisation, Traditional → Simplified conversion and the "
                   "vocabulary lookup are one table inside the model file (docs/bundle.md, version 2). "
                   f"`golden.jsonl` holds {m.get('golden', {}).get('texts', 0)} test vectors for other readers.")
    elif seg["type"] == "jieba":
        out.append(f"jieba {seg.get('jieba_version')} (accurate mode, HMM {'on' if seg.get('hmm') else 'off'}) "
                   f"with the pinned dictionary `{seg['dictionary']}` built from the training segmentation "
                   f"(trained with: {seg.get('trained_with')}"
                   + (f", model {seg['trained_with_model']}" if seg.get("trained_with_model") else "") + ").")
    else:
        out.append("One token per non-whitespace character.")
    if seg.get("convert") and m["format_version"] == 1:
        out.append("Traditional characters are converted to Simplified (`segmenter/t2s.json`) before segmenting.")
    out += ["", f"Agreement with the training segmentation on the validation texts: token F1 "
            f"{agree['token_f1']:.4f}, {agree['identical_texts']} of {agree['texts']} texts identical.", ""]
    return out


def _notes(m: dict) -> list[str]:
    return ["## Export notes", ""] + [f"- {_text(n)}" for n in m["notes"]] + [""] if m.get("notes") else []


def _input_desc(spec: dict) -> str:
    if spec["kind"] == "codepoints":
        return f"{spec['max_len']} characters"
    if spec["kind"] == "hierarchical":
        return f"{spec['max_sentences']} sentences × {spec['max_sentence_len']} tokens"
    return f"{spec['max_len']} tokens"


def _long_texts(spec: dict) -> str:
    """The card's line on long texts: read in windows (format 2 with `input.windows`) or truncated."""
    windows = spec.get("windows")
    if isinstance(windows, dict):
        from kdedge_run.text import Windows

        covered = Windows(windows["size"], windows["stride"], windows["max_windows"], windows["pool"]).reach
        return (f"- Texts longer than {windows['size']} characters are read as overlapping windows (one every "
                f"{windows['stride']} characters, at most {windows['max_windows']}: the first {covered:,} "
                "characters), each label's probability the highest over the windows; characters after those "
                "are not read (`truncated`). Thresholds were tuned on whole texts, so a long text has more chances "
                "to pass them: on the held-out texts longer than one window windows added more false labels than "
                "they recovered missed ones.")
    return (f"- Texts longer than the model input ({_input_desc(spec)}) are truncated; only the beginning is "
            "classified.")



RUN_ROWS = {"teacher": "teacher", "student": "plain student", "kd": "KD student"}


def _run_table(run_info: dict) -> list[str]:
    """The run's teacher, plain and KD students on its validation split, and which one was selected."""
    modes = run_info.get("modes") or {}
    rows = [(name, modes[key]) for key, name in RUN_ROWS.items() if isinstance(modes.get(key), dict)]
    if not rows:
        return []
    out = ["## The run: teacher, plain student and KD student", "",
           "The run's validation split, thresholds tuned on it (the same texts: optimistic; compare the rows, "
           "not the levels):", "",
           "| model | micro-F1 | macro-F1 | weighted-F1 | subset accuracy | epochs | seconds |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows:
        tuned = row.get("tuned") or {}
        out.append(f"| {name} | {_pct(tuned.get('micro_f1'))} | {_pct(tuned.get('macro_f1'))} | "
                   f"{_pct(tuned.get('weighted_f1'))} | {_pct(tuned.get('subset_accuracy'))} | "
                   f"{row.get('epochs_run') or '–'} | {row.get('seconds', '–')} |")
    selected = run_info.get("selected") or {}
    if selected.get("reason"):
        out += ["", f"Selected for export: the {RUN_ROWS.get(selected.get('mode'), _text(str(selected.get('mode'))))} "
                    f"— {_text(str(selected['reason']))}."]
    return out + [""]
