"""`kdedge-run`: predict labels for texts and show what a bundle holds.

Each command's function takes one parameter per option (click passes them by name): that is why `predict` and
`label` exceed eight parameters."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import sys
import time

import click

from . import __version__, load
from .bundle import BundleError
from .classifier import InputError
from .lines import Line, groups, read_lines
from .text import escape, escape_json


class _Cli(click.Group):
    """Reports a user's error (bad option, input, bundle or path) as `kdedge-run: error: ...` on stderr with
    exit code 2; any other exception is a bug and shows its traceback (exit code 1)."""

    def main(self, args=None, prog_name=None, **kwargs):
        kwargs["standalone_mode"] = False
        if sys.stdout is None:  # started with stdout closed (`>&-`): nowhere to write results
            _fail("standard output is closed")
        if args is None:
            args = [_utf8_argument(a) for a in sys.argv[1:]]
        try:
            code = super().main(args, prog_name or "kdedge-run", **kwargs)
        except BrokenPipeError:  # output closed early (e.g. `| head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
            _fail(e.format_message() + hint)
        except click.ClickException as e:
            _fail(e.format_message())
        except (click.Abort, KeyboardInterrupt):
            _fail("interrupted", 130)
        except (BundleError, InputError, OSError) as e:  # anything else is a bug: Python shows its traceback
            _fail(str(e))
        sys.exit(code or 0)


def _fail(message: str, code: int = 2) -> None:
    """One line on stderr, escaped: a message may quote a file name or a value from the bundle or the input."""
    if sys.stderr is not None:
        click.echo(f"kdedge-run: error: {escape(message)}", err=True)
    sys.exit(code)


def _utf8_argument(arg: str) -> str:
    """A command-line argument decoded as UTF-8 whatever the locale (LC_ALL=C would give escapes)."""
    return os.fsencode(arg).decode("utf-8", "surrogateescape")


def _label(name: str) -> str:
    """A label name safe inside text output: escaped, with ',' and '\\' escaped too (labels are comma-joined)."""
    return escape(name, also="\\,")


def _dumps(record: dict, indent=None) -> str:
    """JSON that is always valid and safe on a terminal: NaN and infinities refused (ValueError), never written;
    an unprintable character from a bundle or an input (a bidi override in a label, say) as a \\u escape."""
    return escape_json(json.dumps(record, ensure_ascii=False, allow_nan=False, indent=indent))


class _Input(click.File):
    """click.File("rb") that says so when '-' names a closed standard input."""

    def __init__(self):
        super().__init__("rb")

    def convert(self, value, param, ctx):
        if value == "-" and sys.stdin is None:
            self.fail("standard input is closed", param, ctx)
        return super().convert(value, param, ctx)


class _Probability(click.FloatRange):
    """A float in [0, 1]; NaN is refused (a plain FloatRange lets it through)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number in [0, 1]", param, ctx)
        return number


_model_option = click.option("--model", "model", metavar="DIR", default=None,
                             help="Bundle directory (default: the bundle installed with kdedge-run).")
_backend_option = click.option("--backend", type=click.Choice(["onnx", "tflite"]), default=None,
                               help="Model format to run (default: the bundle's first listed model whose library is installed).")
_threads_option = click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                               help="Intra-op threads of the backend; a number above the cores this "
                                    "process may use (os.sched_getaffinity) is clamped to them.")


@click.group(cls=_Cli, invoke_without_command=True)
@click.version_option(__version__, prog_name="kdedge-run")
@click.pass_context
def main(ctx):
    """Classify Chinese text with a kdedge bundle (no TensorFlow needed)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@main.command()
@click.argument("texts", nargs=-1)
@click.option("--input", "input_file", type=_Input(), default=None, metavar="FILE|-",
              help="Read texts from FILE ('-': stdin): JSON Lines with a \"text\" (and optional "
                   "\"id\") field, or plain text lines. A line longer than 16 MiB is cut there: a plain "
                   "line is predicted with \"truncated\": true, a JSON line is an error.")
@_model_option
@_backend_option
@_threads_option
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json", show_default=True,
              help="json: one JSON object per text; text: 'label1,label2<TAB>text'.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="At most K labels per text.")
@click.option("--threshold", type=_Probability(0.0, 1.0), default=None,
              help="One threshold for all labels instead of the tuned per-label thresholds.")
@click.option("--explain", is_flag=True, help="Add the tokens with the highest attention weights.")
@click.option("--progress/--no-progress", default=None,
              help="Texts done, texts/s and share of the input read, on stderr. [default: when stderr is a terminal]")
@click.pass_context
def predict(ctx, texts, input_file, model, backend, threads, fmt, top_k, threshold, explain, progress):
    """Predict labels for TEXT arguments or for the lines of --input.

    One output line per input, in order. A bad input (invalid JSON or UTF-8, empty text, a text
    the model gives a NaN output for) gives {"line": n, "error": ...} (json) or an empty line plus
    a message on stderr (text), processing goes on, and the exit code is 2 at the end.
    """
    if bool(texts) == bool(input_file):
        raise click.UsageError("give TEXT arguments or --input FILE, not both or neither")
    clf = load(model, backend=backend, threads=threads)
    if explain and not clf.has_attention:
        raise click.UsageError(f"--explain needs a model with an attention output (gru_att or han); "
                               f"{clf.path} has none")
    lines = (Line(n, {"text": t}, None, False) for n, t in enumerate(texts, 1)) if texts else read_lines(input_file)
    out = sys.stdout.buffer
    total = failed = 0
    shown = _Progress(input_file) if input_file and (progress if progress is not None else sys.stderr.isatty()) else None
    for group in groups(lines):  # sorted by length and batched inside the group, written in input order
        results = iter(clf._predict_each([line.text for line in group if line.error is None], top_k, threshold))
        for line in group:
            result = next(results) if line.error is None else line.error
            if not isinstance(result, Exception):
                if line.cut:
                    result = dataclasses.replace(result, truncated=True)
                try:
                    weights = clf.explain(line.text) if explain else None
                    text_out = _result_line(fmt, line.id, line.text, result, weights)
                except ValueError as e:  # an id that is no valid JSON value
                    result = e
            if isinstance(result, Exception):
                failed += 1
                text_out = _error_line(fmt, line.number, line.id, result, "argument" if texts else "line")
            out.write(text_out.encode("utf-8", "backslashreplace") + b"\n")
            total += 1
        out.flush()
        if shown:
            shown.update(total, failed)
    if shown:
        shown.close(total, failed)
    if failed:
        click.echo(f"kdedge-run: error: {failed} of {total} inputs failed", err=True)
        ctx.exit(2)


class _Progress:
    """A one-line progress display on stderr (redrawn at most twice a second): texts, failures, texts/s,
    and for a regular file the share of its bytes read."""

    def __init__(self, stream):
        self.stream, self.start, self.last = stream, time.monotonic(), 0.0
        try:
            self.size = os.fstat(stream.fileno()).st_size if stat.S_ISREG(os.fstat(stream.fileno()).st_mode) else 0
        except (OSError, AttributeError, ValueError):
            self.size = 0

    def update(self, total: int, failed: int, force: bool = False) -> None:
        """Redraw the line if half a second has passed (or `force`)."""
        now = time.monotonic()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        rate = total / max(now - self.start, 1e-9)
        share = ""
        if self.size:
            try:
                share = f", {100 * min(self.stream.tell() / self.size, 1.0):.1f}% of input"
            except (OSError, ValueError):
                pass
        sys.stderr.write(f"\r{total} texts ({failed} failed), {rate:.0f} texts/s{share}  ")
        sys.stderr.flush()

    def close(self, total: int, failed: int) -> None:
        """Draw the final figures and end the line."""
        self.update(total, failed, force=True)
        sys.stderr.write("\n")


def _result_line(fmt, rid, text, prediction, weights) -> str:
    if fmt == "text":
        cols = [",".join(map(_label, prediction.labels)),
                escape(" ".join(text.replace("\t", " ").splitlines()))]  # one line, 2 columns
        if weights is not None:
            cols.append(escape(" ".join(f"{tok}:{w:.4f}" for tok, w in weights)))
        return "\t".join(cols)
    record = {} if rid is None else {"id": rid}
    record |= {"labels": prediction.labels, "probabilities": prediction.probabilities,
               "truncated": prediction.truncated, "windows": prediction.windows,
               "coverage": round(prediction.coverage, 4), "judged": prediction.judged}
    if weights is not None:
        record["explanation"] = [{"token": tok, "weight": w} for tok, w in weights]
    try:
        return _dumps(record)
    except RecursionError:
        raise InputError("id nested too deeply to write back") from None


def _error_line(fmt, n, rid, error, where: str = "line") -> str:
    """The output for input `n` that failed: `where` is "line" (of --input) or "argument" (a TEXT argument)."""
    if fmt == "text":
        click.echo(f"kdedge-run: error: {where} {n}: {escape(str(error))}", err=True)
        return ""
    record = {where: n, "error": str(error)}
    try:
        return _dumps(record | ({} if rid is None else {"id": rid}))
    except (ValueError, RecursionError):  # an id that cannot be written back as JSON
        return _dumps(record)


@main.command()
@click.option("--input", "input_path", required=True, metavar="PATH",
              help="JSON Lines with a \"text\" field, or plain text lines; a file or a directory of files.")
@click.option("--out", required=True, metavar="DIR", help="Output directory of JSON Lines files (must not exist).")
@_model_option
@_backend_option
@click.option("--engine", type=click.Choice(["ray", "local"]), default="ray", show_default=True,
              help="ray: --workers Ray actors (pip install \"kdedge-run[ray]\"); local: this process.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Ray actors, each loading the bundle once and using one CPU.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="At most K labels per text.")
@click.option("--threshold", type=_Probability(0.0, 1.0), default=None,
              help="One threshold for all labels instead of the tuned per-label thresholds.")
@click.option("--address", default=None, help="Ray cluster to join; default: a local Ray instance.")
def label(input_path, out, model, backend, engine, workers, top_k, threshold, address):
    """Label a large dataset into --out: one output line per input line, in order; a bad line gets an error
    record and the job goes on. See kdedge_run.batch."""
    from .batch import LabelError, label_dataset

    try:
        result = label_dataset(input_path, out, model, workers, backend, threshold, top_k, address, engine)
    except (ImportError, LabelError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if result["cleared"]:
        click.echo("kdedge-run: cleared the partial output of an earlier run that stopped", err=True)
    click.echo(f"{result['texts']} lines labelled ({result['errors']} errors) into {result['out']}", err=True)


@main.command()
@_model_option
@_backend_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def info(model, backend, fmt):
    """Show a bundle's labels, thresholds, temperatures, models, files, metrics and parity."""
    data = _plain(load(model, backend=backend).info())
    if fmt == "json":
        click.echo(_dumps(data, indent=2))
        return
    lines = [f"bundle        {data['path']}",
             f"format        version {data['format_version']}, kdedge {data['kdedge_version']}, "
             f"created {data['created']}",
             f"model         {data['architecture']} ({data['model_kind']}), backend {data['backend']}",
             f"input         {_flat(data['input'])}",
             f"vocab         {data['vocab_size']} tokens; embeddings {_flat(data['embeddings'])}",
             f"segmenter     {_flat(data['segmenter'])}",
             "labels        threshold  temperature"]
    described = data["label_descriptions"] or {}
    lines += [f"  {_label(label):<12}{th:>10.4f}{t:>13.4f}" + (f"  {described[label]}" if label in described else "")
              for label, th, t in zip(data["labels"], data["thresholds"], data["temperatures"])]
    if data["abstain"]:
        lines.append(f"abstain       a text is not judged (no labels) when under "
                     f"{100 * data['abstain']['min_coverage']:.0f}% of what the model reads is in its vocabulary")
    lines.append("models")
    lines += [f"  {m['format']:<8}{m['precision'] or '?':<14}{m['file']:<24}{m['bytes']:>12,} bytes"
              for m in data["models"]]
    lines.append("files")
    lines += [f"  {rel:<38}{size:>12,} bytes" for rel, size in data["files"].items()]
    lines += _test_scores(data.get("test_metrics"))
    for key in ("metrics", "calibration_report", "segmentation_agreement", "parity"):
        lines += [key, *_tree(data[key], 1)]
    for line in lines:  # informative manifest fields are free text: nothing reaches the terminal raw
        click.echo(escape(line))


MAX_INFO_DEPTH = 32


def _plain(value, depth: int = 0):
    """Manifest data made writable as strict JSON: non-finite floats → null, nesting cut at MAX_INFO_DEPTH."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (dict, list)) and depth >= MAX_INFO_DEPTH:
        return "(nested too deeply)"
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    return value


def _test_scores(test) -> list[str]:
    """The held-out test scores (`kdedge export --test`) as lines, F1 in percent; a note when there are none."""
    if not isinstance(test, dict):
        return ["test scores   none in this bundle (export with --test FILE to measure them on held-out texts)"]
    def pct(v):
        return f"{100 * v:.1f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"
    lines = [f"test scores   {test.get('texts')} held-out texts at the bundle's thresholds: micro-F1 "
             f"{pct(test.get('micro_f1'))}, macro-F1 {pct(test.get('macro_f1'))}, weighted-F1 "
             f"{pct(test.get('weighted_f1'))}, exact match {pct(test.get('subset_accuracy'))}%"]
    per_label = test.get("per_label_f1")
    if isinstance(per_label, dict):
        lines.append("  F1 " + ", ".join(f"{_label(str(k))} {pct(v)}" for k, v in per_label.items()))
    return lines


def _flat(value) -> str:
    """A dict as `k=v, ...` on one line (nested dicts in braces)."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v) if not isinstance(v, dict) else '{' + _flat(v) + '}'}"
                         for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"  # 0.8608, 1.21e-07: not 0.8607594936708861
    return json.dumps(value, ensure_ascii=False)


def _tree(value, depth: int) -> list[str]:
    """Indented lines for a manifest report of any shape (nested dicts, lists of records)."""
    pad = "  " * depth
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v and any(isinstance(x, (dict, list)) for x in
                                                         (v.values() if isinstance(v, dict) else v)):
                lines += [f"{pad}{k}"] + _tree(v, depth + 1)
            else:
                lines.append(f"{pad}{k}: {_flat(v)}")
        return lines
    if isinstance(value, list):
        return [f"{pad}- {_flat(v)}" for v in value]
    return [f"{pad}{_flat(value)}"]
