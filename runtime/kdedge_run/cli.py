"""`kdedge-run`: predict labels for texts and show what a bundle holds."""
from __future__ import annotations

import json
import os
import sys
from itertools import islice

import click

from . import __version__, load
from .bundle import BundleError

BATCH = 64


class _Cli(click.Group):
    """Reports every error as `kdedge-run: error: ...` on stderr with exit code 2, never a traceback."""

    def main(self, args=None, prog_name=None, **kwargs):
        kwargs["standalone_mode"] = False
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
        except click.Abort:
            _fail("aborted")
        except (BundleError, ValueError, TypeError, OSError) as e:
            _fail(str(e))
        except Exception as e:  # a bug: still no traceback for the user, but say what it was
            _fail(f"unexpected {type(e).__name__}: {e}")
        sys.exit(code or 0)


def _fail(message: str) -> None:
    click.echo(f"kdedge-run: error: {message}", err=True)
    sys.exit(2)


_model_option = click.option("--model", "model", metavar="DIR", default=None,
                             help="Bundle directory (default: the bundle installed with kdedge-run).")
_backend_option = click.option("--backend", type=click.Choice(["onnx", "tflite"]), default=None,
                               help="Model format to run (default: the bundle's first listed model whose library is installed).")
_threads_option = click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                               help="Intra-op threads of the backend.")


@click.group(cls=_Cli, invoke_without_command=True)
@click.version_option(__version__, prog_name="kdedge-run")
@click.pass_context
def main(ctx):
    """Classify Chinese text with a kdedge bundle (no TensorFlow needed)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@main.command()
@click.argument("texts", nargs=-1)
@click.option("--input", "input_file", type=click.File("rb"), default=None, metavar="FILE|-",
              help="Read texts from FILE ('-': stdin): JSON Lines with a \"text\" (and optional "
                   "\"id\") field, or plain text lines.")
@_model_option
@_backend_option
@_threads_option
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json", show_default=True,
              help="json: one JSON object per text; text: 'label1,label2<TAB>text'.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="At most K labels per text.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="One threshold for all labels instead of the tuned per-label thresholds.")
@click.option("--explain", is_flag=True, help="Add the tokens with the highest attention weights.")
@click.pass_context
def predict(ctx, texts, input_file, model, backend, threads, fmt, top_k, threshold, explain):
    """Predict labels for TEXT arguments or for the lines of --input.

    One output line per input, in order. A bad input (invalid JSON or UTF-8, empty text) gives
    {"line": n, "error": ...} (json) or an empty line plus a message on stderr (text), processing
    goes on, and the exit code is 2 at the end.
    """
    if bool(texts) == bool(input_file):
        raise click.UsageError("give TEXT arguments or --input FILE, not both or neither")
    clf = load(model, backend=backend, threads=threads)
    if explain and not clf.has_attention:
        raise click.UsageError(f"--explain needs a model with an attention output (gru_att or han); "
                               f"{clf.path} has none")
    items = ((n, None, t, None) for n, t in enumerate(texts, 1)) if texts else _read_lines(input_file)
    out = sys.stdout.buffer
    total = failed = 0
    while batch := list(islice(items, BATCH)):
        results = iter(_predict_batch(clf, [item[2] for item in batch if item[3] is None], top_k, threshold))
        for n, rid, text, error in batch:
            result = next(results) if error is None else error
            if isinstance(result, Exception):
                failed += 1
                line = _error_line(fmt, n, rid, result)
            else:
                weights = clf.explain(text) if explain else None
                line = _result_line(fmt, rid, text, result, weights)
            out.write(line.encode("utf-8", "backslashreplace") + b"\n")
            total += 1
        out.flush()
    if failed:
        click.echo(f"kdedge-run: error: {failed} of {total} inputs failed", err=True)
        ctx.exit(2)


def _read_lines(stream):
    """Yield (line number, id, text, error) per input line, decoding each line on its own."""
    for n, raw in enumerate(stream, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield n, None, None, ValueError(f"invalid UTF-8: {e}")
            continue
        line = line.removesuffix("\n").removesuffix("\r")
        if not line.lstrip().startswith("{"):
            yield n, None, line, None
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield n, None, None, ValueError(f"invalid JSON: {e}")
            continue
        rid = record.get("id") if isinstance(record, dict) else None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            yield n, rid, None, ValueError('JSON line needs a string "text" field')
            continue
        yield n, rid, record["text"], None


def _predict_batch(clf, texts, k, threshold) -> list:
    """Predictions for `texts`; a text that cannot be classified gets its exception instead."""
    try:
        return clf.predict(texts, k=k, threshold=threshold)
    except (TypeError, ValueError):
        results = []
        for text in texts:
            try:
                results.append(clf.predict(text, k=k, threshold=threshold))
            except (TypeError, ValueError) as e:
                results.append(e)
        return results


def _result_line(fmt, rid, text, prediction, weights) -> str:
    if fmt == "text":
        cols = [",".join(prediction.labels), " ".join(text.replace("\t", " ").splitlines())]  # one line, 2 columns
        if weights is not None:
            cols.append(" ".join(f"{tok}:{w:.4f}" for tok, w in weights))
        return "\t".join(cols)
    record = {} if rid is None else {"id": rid}
    record |= {"labels": prediction.labels, "probabilities": prediction.probabilities,
               "truncated": prediction.truncated}
    if weights is not None:
        record["explanation"] = [{"token": tok, "weight": w} for tok, w in weights]
    return json.dumps(record, ensure_ascii=False)


def _error_line(fmt, n, rid, error) -> str:
    if fmt == "text":
        click.echo(f"kdedge-run: error: line {n}: {error}", err=True)
        return ""
    record = {"line": n, "error": str(error)}
    if rid is not None:
        record["id"] = rid
    return json.dumps(record, ensure_ascii=False)


@main.command()
@_model_option
@_backend_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def info(model, backend, fmt):
    """Show a bundle's labels, thresholds, temperatures, models, files, metrics and parity."""
    data = load(model, backend=backend).info()
    if fmt == "json":
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    click.echo(f"bundle        {data['path']}")
    click.echo(f"format        version {data['format_version']}, kdedge {data['kdedge_version']}, "
               f"created {data['created']}")
    click.echo(f"model         {data['architecture']} ({data['model_kind']}), backend {data['backend']}")
    click.echo(f"input         {_flat(data['input'])}")
    click.echo(f"vocab         {data['vocab_size']} tokens; embeddings {_flat(data['embeddings'])}")
    click.echo(f"segmenter     {_flat(data['segmenter'])}")
    click.echo("labels        threshold  temperature")
    for label, th, t in zip(data["labels"], data["thresholds"], data["temperatures"]):
        click.echo(f"  {label:<12}{th:>10.4f}{t:>13.4f}")
    click.echo("models")
    for m in data["models"]:
        click.echo(f"  {m['format']:<8}{m['precision'] or '?':<6}{m['file']:<24}{m['bytes']:>12,} bytes")
    click.echo("files")
    for rel, size in data["files"].items():
        click.echo(f"  {rel:<38}{size:>12,} bytes")
    for key in ("metrics", "calibration_report", "segmentation_agreement", "parity"):
        click.echo(key)
        for line in _tree(data[key], 1):
            click.echo(line)


def _flat(value) -> str:
    """A dict as `k=v, ...` on one line (nested dicts in braces)."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v) if not isinstance(v, dict) else '{' + _flat(v) + '}'}"
                         for k, v in value.items())
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
