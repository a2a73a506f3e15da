"""The `kdedge` command: data stats, embed, train, cv, export.

Each command's function takes one parameter per option (click passes them by name), and `training_options` is a
declarative list with one entry per option: that, not logic, is why they exceed eight parameters or 60 lines."""
from __future__ import annotations

import _thread
import atexit
import functools
import json
import os
import signal
import sys
import threading

import click

from kdedge.networks.architectures import ARCHITECTURES
from kdedge.config import OPTION_HELP, TRAIN_DEFAULTS, make_config, named_configs, option_type, read_config_file
from kdedge.errors import USER_ERRORS
from kdedge_export.options import DTYPES, FORMATS, MODEL_KINDS, QUANTIZE
from kdedge_run.text import escape
from kdedge.tflog import VERBOSE_ENV, import_tensorflow, log_to_stderr

CONFIG_SUMMARIES = {"char": "the defaults, spelled out", "paper": "the paper's settings: jieba words, towers "
                    "teacher, raw soft targets", "words": "jieba words, frozen vectors: kdedge's former default"}


INTERRUPTED_MESSAGE = "kdedge: interrupted; nothing was written under the final name"
INTERRUPT_GRACE_SECONDS = 10  # after Ctrl-C, the process ends within this even if a library swallowed it


def _on_sigint(signum, frame):
    """Ctrl-C: remember it (files.commit_dir then refuses to publish), make sure the process ends, and raise
    KeyboardInterrupt as usual (user_errors reports it with exit code 130)."""
    from kdedge.files import INTERRUPTED

    if not INTERRUPTED.is_set():
        INTERRUPTED.set()
        watchdog = threading.Timer(INTERRUPT_GRACE_SECONDS, _exit_interrupted)
        watchdog.daemon = True
        watchdog.start()
    raise KeyboardInterrupt


def _exit_interrupted() -> None:
    """The watchdog: the interrupt was swallowed (e.g. by a library's `except BaseException`) or cleanup hangs.
    Staging directories are dot-prefixed and safe to delete; nothing is under the final name."""
    os.write(2, (INTERRUPTED_MESSAGE + "\n").encode())
    os._exit(130)


def _unraisable_hook(default):
    """sys.unraisablehook that raises a swallowed Ctrl-C again. A KeyboardInterrupt that lands in a weakref
    callback or finalizer (TensorFlow and tf2onnx run many) is only printed there and the work went on; a
    timer thread interrupts the main thread again, so it stops in ordinary code shortly after. Once
    interrupted, other finalizer errors are silent: they come from objects the interrupt left half-built
    (e.g. TensorFlow's ApiDefMap.__del__ → AttributeError), not from a bug to report."""
    from kdedge.files import INTERRUPTED

    def hook(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            threading.Timer(0.01, _thread.interrupt_main, (signal.SIGINT,)).start()
            return
        if INTERRUPTED.is_set():
            return
        default(unraisable)
    hook.kdedge = True
    return hook


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _install_interrupt_handling():
    """Our SIGINT handler for one command; returns the handler to restore after it (None: not the main thread)."""
    from kdedge.files import INTERRUPTED

    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers belong to the main thread (e.g. the CLI run inside a test's worker thread)
    INTERRUPTED.clear()
    if not getattr(sys.unraisablehook, "kdedge", False):
        sys.unraisablehook = _unraisable_hook(sys.unraisablehook)
        atexit.register(_ignore_sigint)  # the command is done: a Ctrl-C while Python shuts down changes nothing
    return signal.signal(signal.SIGINT, _on_sigint)


def user_errors(func):
    """Report kdedge's own errors (kdedge.errors) as `kdedge: error: …` with exit code 2, without a traceback
    unless `kdedge --debug`; any other exception is a bug and shows its traceback. Ctrl-C exits with 130 and
    publishes nothing (see _on_sigint), also when a library turned it into another exception; once the
    command is done, a Ctrl-C while Python shuts down is ignored."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from kdedge.files import INTERRUPTED

        previous = _install_interrupt_handling()
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            _exit_after_interrupt(previous)
        except Exception as exc:
            if INTERRUPTED.is_set():  # e.g. TensorFlow or onnxruntime interrupted while importing or tracing
                _exit_after_interrupt(previous)
            if not isinstance(exc, USER_ERRORS) or click.get_current_context().meta.get("kdedge.debug"):
                raise
            click.echo(f"kdedge: error: {escape(str(exc))}", err=True)  # one printable line, whatever it quotes
            sys.exit(2)
        finally:
            if previous is not None:  # not reached after Ctrl-C: _exit_after_interrupt ends the process
                signal.signal(signal.SIGINT, previous)
    return wrapper


def _exit_after_interrupt(previous) -> None:
    """Exit 130 once the command stopped for Ctrl-C (its staging was removed as the interrupt unwound).
    Further SIGINTs (Ctrl-C held or pressed again, the unraisable hook's re-raise still pending) are ignored
    from here on, and the process ends here: in Python's own shutdown a KeyboardInterrupt that a library
    swallowed earlier can still end it by the signal (exit -2, seen once in CI during `kdedge export`), which
    a caller must not take for a crash. In a worker thread (previous is None) the caller gets SystemExit."""
    if previous is not None:
        _ignore_sigint()
    click.echo(INTERRUPTED_MESSAGE, err=True)
    if previous is None:
        sys.exit(130)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(130)


@click.group()
@click.version_option(package_name="kdedge")
@click.option("--debug", is_flag=True, help="Show the traceback of every error, kdedge's own ones too.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's C++ log (device probing, oneDNN, XLA).")
@click.pass_context
def main(ctx, debug, verbose):
    """Train compact multi-label Chinese text classifiers by knowledge distillation; export them to the edge."""
    ctx.meta["kdedge.debug"] = debug
    if verbose:  # fold worker processes inherit it
        os.environ[VERBOSE_ENV] = "1"


@main.group()
def data():
    """Inspect labelled data files."""


@data.command("stats")
@click.argument("file", type=click.Path())
@click.option("--labels", "labels_file", type=click.Path(), help="File with one label per line.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--skip-invalid", is_flag=True, help="Skip invalid rows (and count them) instead of failing.")
@user_errors
def data_stats(file, labels_file, as_json, skip_invalid):
    """Text count, label frequencies, cardinality, imbalance ratio and length distribution of FILE."""
    from kdedge.text.data import describe, load_dataset

    stats = describe(load_dataset(file, labels_file, skip_invalid=skip_invalid))
    if as_json:
        click.echo(json.dumps(stats, ensure_ascii=False, indent=2))
        return
    click.echo(f"{file}: {stats['texts']} texts, {stats['labels']} labels, cardinality {stats['cardinality']:.2f}, "
               f"imbalance ratio {stats['imbalance_ratio']:.1f}, {stats['texts_without_label']} without label"
               + (f", {stats['skipped_rows']} invalid rows skipped" if stats["skipped_rows"] else ""))
    total = stats["texts"]
    for name, count in stats["label_frequency"].items():
        click.echo(f"  {name:<20} {count:>7}  {100 * count / total:5.1f}%")
    lc = stats["length_chars"]
    click.echo(f"length (chars): min {lc['min']}, p50 {lc['p50']:.0f}, mean {lc['mean']:.1f}, p90 {lc['p90']:.0f}, "
               f"p99 {lc['p99']:.0f}, max {lc['max']}")


@data.command("split")
@click.argument("file", type=click.Path())
@click.option("--test", "test_share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Share of the texts held out for testing (stratified by label).")
@click.option("--group-by", help="Keep texts sharing this JSON field (e.g. doc) on one side.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Directory to write train.jsonl and test.jsonl into (created if missing).")
@click.option("--force", is_flag=True, help="Replace existing train.jsonl / test.jsonl there.")
@click.option("--skip-invalid", is_flag=True, help="Skip invalid rows (and count them) instead of failing.")
@user_errors
def data_split(file, test_share, group_by, seed, out_dir, force, skip_invalid):
    """Hold out a label-stratified test split of FILE: writes OUT/train.jsonl and OUT/test.jsonl."""
    from kdedge.text.data import load_dataset, write_split

    written = write_split(load_dataset(file, skip_invalid=skip_invalid), out_dir, test_share, seed, group_by, force)
    total = sum(written.values())
    for name, count in written.items():
        click.echo(f"{name}: {count} texts ({100 * count / total:.1f}%)")
    held = sum(c for name, c in written.items() if str(name).endswith("test.jsonl")) / total if total else 0.0
    if abs(held - test_share) > max(0.05, 0.5 * test_share):
        why = f" (texts of one `{group_by}` stay together)" if group_by else ""
        click.echo(f"kdedge: note: the test split holds {100 * held:.1f}% of the texts, not the {100 * test_share:g}% "
                   f"asked{why}; the split is as close as the data allows", err=True)


def _shown_default(name: str, flags: str) -> str | bool:
    """What `--help` shows as the default of the TrainConfig field `name` (the dataclass holds the value)."""
    value = TRAIN_DEFAULTS[name]
    if name == "batch_size":
        return "per architecture: " + ", ".join(f"{a.name} {a.batch_size}" for a in ARCHITECTURES.values())
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):  # the flag that is in force: --kd-label-gate, --frozen-embeddings, ...
        on, _, off = flags.partition("/")
        return (on if value else off).lstrip("-")
    return False if value is None else str(value)


def config_option(flags: str, **kwargs):
    """A click option for the TrainConfig field named like `flags`: its type, choices and help text from the config
    (kdedge.config.option_type, OPTION_HELP), unset (None) unless given, so a config file's value stands; `--help`
    shows the field's default."""
    name = flags.split("/")[0].lstrip("-").replace("-", "_")
    kind = option_type(name)
    if isinstance(kind, tuple):
        kwargs["type"] = click.Choice(kind)
    elif kind is not None:
        kwargs["type"] = kind
    kwargs["help"] = OPTION_HELP[name]
    shown = _shown_default(name, flags)
    if shown:  # in the help text: click puts a string show_default in parentheses
        kwargs["help"] += f"  [default: {shown}]"
    return click.option(flags, **kwargs)


def training_options(func):
    """Options shared by `train` and `cv`: each is also a config-file key (CLI overrides the file)."""
    options = [
        click.option("--config", "config_file",
                     help="TOML/YAML/JSON file of option defaults, or a named config: "
                          + "; ".join(f"{name} ({CONFIG_SUMMARIES.get(name, 'kdedge/configs')})"
                                      for name in named_configs()) + "."),
        config_option("--seed"), config_option("--val-split"), config_option("--segmenter"),
        config_option("--ckip-model", type=click.Path()), config_option("--convert"),
        config_option("--jieba-hmm/--no-jieba-hmm", default=None), config_option("--vectors", type=click.Path()),
        config_option("--embedding-dim"), config_option("--w2v-epochs"),
        config_option("--epochs"), config_option("--patience"),
        config_option("--plain-run-out/--plain-patience", default=None), config_option("--batch-size"),
        config_option("--learning-rate"), config_option("--max-len"), config_option("--dropout"),
        config_option("--max-sentences"), config_option("--max-sentence-len"),
        config_option("--max-vocab"), config_option("--min-count"), config_option("--threshold-min-support"),
        config_option("--monitor"), config_option("--kd-alpha"), config_option("--kd-temperature"),
        config_option("--kd-init"),
        config_option("--teacher"), config_option("--teacher-calibration"), config_option("--teacher-width-budget"),
        config_option("--teacher-crossfit"), config_option("--kd-label-gate/--no-kd-label-gate", default=None),
        config_option("--select-confidence"), config_option("--select-metric"), config_option("--pos-weight"),
        config_option("--trainable-embeddings/--frozen-embeddings", default=None),
        config_option("--strategy"), config_option("--cpu-replicas"), config_option("--peer-timeout"),
        click.option("--labels", "labels_file", type=click.Path(), help="File with one label per line."),
        click.option("--skip-invalid", is_flag=True, help="Skip invalid rows (counted) instead of failing."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_config(config_file, **cli):
    """Config file values overridden by the CLI values that were given; returns (config, run options)."""
    file_values = read_config_file(config_file) if config_file else {}
    run = {k: file_values.pop(k, None) for k in ("data", "out", "labels_file")}
    return make_config(file_values, **cli), run


def _command_setup(config_file, data, out, labels_file, cli: dict):
    """Merge config file and CLI; check data/out are known; quiet TensorFlow; log to stderr."""
    cfg, run = build_config(config_file, **cli)
    data, out = data or run["data"], out or run["out"]
    if not data or not out:
        raise click.UsageError("--data and --out are required (on the command line or in --config)")
    import_tensorflow()
    log_to_stderr()
    return cfg, data, out, labels_file or run["labels_file"]


@main.command()
@click.option("--data", type=click.Path(), help="Labelled texts (.jsonl, .csv, .tsv).")
@config_option("--arch")
@config_option("--mode")
@click.option("--out", type=click.Path(), help="Run directory to create.")
@click.option("--force", is_flag=True, help="Replace an existing run directory (never anything else).")
@click.option("--restart", is_flag=True,
              help="Train every phase again: do not take those an interrupted run into --out kept (.OUT.resume).")
@click.option("--label-descriptions", type=click.Path(),
              help='JSON {"label": "what it means"}: kept in the run, shown in exported bundles\' cards and '
                   "`kdedge-run info`.")
@training_options
@user_errors
def train(data, out, config_file, labels_file, skip_invalid, force, restart, label_descriptions, quiet, **cli):
    """Train a teacher (binary relevance), a plain student and a distilled student."""
    cfg, data, out, labels_file = _command_setup(config_file, data, out, labels_file, cli)
    from kdedge.training.train import TrainingData, train_run

    from kdedge.training.distribute import get_strategy, written_line

    try:
        metrics = train_run(cfg, TrainingData(data, labels_file, skip_invalid, label_descriptions), out, force=force,
                            restart=restart, progress=not quiet)
    except KeyboardInterrupt:
        from kdedge.training.resume import resume_dir

        if resume_dir(out).is_dir():
            click.echo(f"kdedge: the finished phases are kept in {resume_dir(out)}: the same command resumes "
                       "from them", err=True)
        raise
    click.echo(written_line(get_strategy(cfg), out))
    for line in summary_table(metrics):
        click.echo(line)


SUMMARY_KEYS = (("micro_f1", "micro"), ("macro_f1", "macro"), ("weighted_f1", "wtd"), ("subset_accuracy", "subset"))


def summary_table(metrics: dict) -> list[str]:
    """The end-of-training table: validation scores (%) at 0.5 and at tuned thresholds, seconds; * marks the
    student the run selected for export."""
    selected = (metrics.get("selected") or {}).get("mode")
    head = " ".join(f"{name:>6}" for _, name in SUMMARY_KEYS)
    lines = [f"validation scores (%)   {'at threshold 0.5':^27} | {'at tuned thresholds':^27} | seconds",
             f"{'mode':<23} {head} | {head} |"]
    for mode, m in metrics["modes"].items():
        cells = [" ".join(f"{100 * m[at][k]:6.1f}" for k, _ in SUMMARY_KEYS) for at in ("at_0.5", "tuned")]
        name = f"{mode}{' *' if mode == selected else ''}"
        lines.append(f"{name:<23} {cells[0]} | {cells[1]} | {m['seconds']:7.0f}")
    teacher = metrics["modes"].get("teacher") or {}
    if teacher.get("reason"):
        lines.append(f"teacher (auto): {teacher['reason']}")
    if selected:
        lines.append(f"* selected for export: {metrics['selected']['reason']}")
    return lines


@main.command()
@click.option("--data", type=click.Path(), help="Labelled texts (.jsonl, .csv, .tsv).")
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--archs", default="textcnn", show_default=True,
              help=f"Comma-separated: {','.join(ARCHITECTURES)}.")
@click.option("--group-by", help="Keep texts sharing this JSON field (e.g. doc) in one fold.")
@click.option("--only-fold", "only_folds", type=int, multiple=True, help="Run just these folds (resumable pieces).")
@click.option("--no-baselines", is_flag=True, help="Skip the TF-IDF+LR and fastText baselines.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="(fold, architecture) pieces run at once, each in its own process pinned to its share of the CPU "
              "cores; list the slowest architecture first.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: each (fold, architecture) is a Ray task (pip install 'kdedge[ray]'); --out must be on a "
              "filesystem every node sees.")
@click.option("--address", help="Ray cluster to join (e.g. ray://head:10001 or auto); default: a local Ray instance.")
@click.option("--out", type=click.Path(), help="Directory for fold results and the report (resumes if present).")
@training_options
@user_errors
def cv(data, folds, archs, group_by, only_folds, no_baselines, jobs, engine, address, out, config_file, labels_file,
       skip_invalid, quiet, **cli):
    """Cross-validate teacher / student / KD per architecture (+ baselines); resumes finished folds."""
    cfg, data, out, labels_file = _command_setup(config_file, data, out, labels_file, cli)
    from kdedge.crossval.cv import run_cv

    arch_list = [a.strip() for a in archs.split(",") if a.strip()]
    results = run_cv(cfg, data, out, folds=folds, archs=arch_list, group_by=group_by, labels_file=labels_file,
                     baselines=not no_baselines, progress=not quiet, only_folds=list(only_folds) or None,
                     skip_invalid=skip_invalid, jobs=jobs, engine=engine, address=address)
    click.echo(f"report: {out}/results.md ({len(results['architectures'])} architectures)")


@main.command()
@click.option("--corpus", "corpus", multiple=True, required=True, type=click.Path(),
              help="Plain UTF-8 text files (one sentence or paragraph a line), directories (their *.txt) or data "
                   "files (.jsonl/.csv/.tsv: their texts); repeat.")
@click.option("--exclude", multiple=True, type=click.Path(),
              help="A data file whose texts are left out of the corpus (e.g. the texts you will evaluate on); repeat.")
@click.option("--out", required=True, type=click.Path(),
              help="vectors.txt (text) or vectors.bin (binary); OUT.json records the corpus, settings and hashes.")
@click.option("--segmenter", type=click.Choice(option_type("segmenter")), default="char", show_default=True,
              help="Tokens to learn vectors for; char matches kdedge train's default.")
@click.option("--ckip-model", type=click.Path())
@click.option("--convert", type=click.Choice(["t2s", "none"]), default="t2s", show_default=True,
              help="Script conversion before segmentation; use what the classifier will use (training's "
                   "--convert auto becomes t2s for Traditional data, none otherwise).")
@click.option("--dim", type=int, default=300, show_default=True)
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--min-count", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="1 makes the result reproducible.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@user_errors
def embed(corpus, exclude, out, segmenter, ckip_model, convert, dim, epochs, min_count, seed, workers, quiet):
    """Pre-train Word2Vec (skip-gram) on unlabeled text with the classifier's segmentation."""
    from importlib.metadata import version
    from pathlib import Path

    from kdedge import __version__
    from kdedge.files import write_json_atomic
    from kdedge.text.corpus import read_corpus
    from kdedge.text.embed import save_vectors, train_word2vec
    from kdedge.text.segment import Segmenter
    from kdedge_run.bundle import file_sha256

    lines, record = read_corpus(corpus, exclude)
    click.echo(f"segmenting {len(lines)} lines from {len(record['sources'])} files"
               + (f" ({sum(s['excluded_lines'] for s in record['sources'])} excluded)" if exclude else ""), err=True)
    sentences = Segmenter(segmenter, convert, ckip_model=ckip_model, progress=not quiet).segment(lines)["tokens"]
    tokens = sum(map(len, sentences))
    click.echo(f"training {dim}-d Word2Vec on {tokens} tokens", err=True)
    wv = train_word2vec(sentences, dim, epochs, seed, min_count, workers, not quiet)
    save_vectors(wv, out)
    settings = {"segmenter": segmenter, "ckip_model": ckip_model, "convert": convert, "dim": dim, "epochs": epochs,
                "min_count": min_count, "seed": seed, "workers": workers}
    write_json_atomic(Path(f"{out}.json"), {
        "corpus": record, "settings": settings, "tokens": tokens, "words": len(wv.key_to_index),
        "vectors_sha256": file_sha256(out), "reproducible": workers == 1,
        "versions": {"kdedge": __version__, "gensim": version("gensim")}})
    click.echo(f"{out}: {len(wv.key_to_index)} words x {dim} (record: {out}.json)")


@main.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "all"]), default=FORMATS[0], show_default=True,
              help="Model file format(s) in the bundle.")
@click.option("--quantize", type=click.Choice(QUANTIZE), default=QUANTIZE[0], show_default=True,
              help="Character runs (bundle format 2): int8 or fp16 store the weights as float16 values computed "
                   "in float32 (batch-invariant, ONNX and TFLite agree), int8 also the vectors as int8. Other runs: "
                   "int8 = ONNX dynamic int8 / TFLite dynamic range; fp16 = TFLite float16. Sets the vectors' "
                   "default dtype too.")
@click.option("--model", "model_kind", type=click.Choice(MODEL_KINDS),
              help="Which student of the run to export (default: the one `kdedge train --mode all` selected on "
                   "its validation split, else kd).")
@click.option("--thresholds", "thresholds_file", type=click.Path(),
              help='JSON {"label": threshold} replacing the tuned thresholds.')
@click.option("--vectors-dtype", type=click.Choice(DTYPES),
              help="Storage of the vectors table (default: float32, or int8/float16 with --quantize).")
@click.option("--label-descriptions", type=click.Path(),
              help='JSON {"label": "what it means"} for the manifest, model card and `kdedge-run info` '
                   "(default: the run's, from `kdedge train --label-descriptions`).")
@click.option("--intended-use", help="What the model is for (and not for), first in the model card "
                                     "(default: tagging texts like the training data's).")
@click.option("--test", "test_data", type=click.Path(),
              help="Labelled texts held out from training (e.g. from `kdedge data split`): the finished bundle "
                   "is scored on them and the model card reports it.")
@click.option("--out", required=True, type=click.Path(), help="Bundle directory to create.")
@click.option("--force", is_flag=True, help="Replace an existing bundle directory.")
@user_errors
def export(run_dir, fmt, quantize, model_kind, thresholds_file, vectors_dtype, label_descriptions, intended_use,
           test_data, out, force):
    """Export a run's distilled student as a kdedge bundle (docs/bundle.md), checked through kdedge-run."""
    import_tensorflow()
    from kdedge_export import export_run

    manifest = export_run(run_dir, out, formats=fmt, quantize=quantize, model=model_kind,
                          vectors_dtype=vectors_dtype, force=force, thresholds_file=thresholds_file,
                          label_descriptions=label_descriptions, test_data=test_data, intended_use=intended_use,
                          log=lambda msg: click.echo(f"kdedge export: {msg}", err=True))
    parity = manifest["parity"]
    seg = manifest["segmentation_agreement"]
    click.echo(f"bundle written to {out}: {manifest['architecture']} ({manifest['model_kind']}), "
               f"models {', '.join(e['format'] + ' ' + e['precision'] for e in manifest['models'])} "
               "(preferred first), "
               f"{len(manifest['labels'])} labels, vectors {manifest['embeddings']['dtype']}, "
               f"segmentation agreement {seg['token_f1']:.4f}")
    click.echo(f"parity on {parity['texts']} validation texts vs Keras "
               f"(macro-F1 {100 * parity['keras_macro_f1']:.1f}):")
    click.echo(f"  {'format':<7} {'precision':<13} {'vectors':<8} {'bytes':>11} {'max|dp|':>9} {'flips':>6} "
               f"{'macroF1':>8} {'change':>7} {'ms/text':>8}  shipped")
    for r in parity["results"]:
        click.echo(f"  {r['format']:<7} {r['precision']:<13} {r['vectors']:<8} {r['bytes']:>11,} "
                   f"{r['max_abs_dp']:>9.2e} {r['flipped_decisions']:>6} {100 * r['macro_f1']:>8.1f} "
                   f"{100 * r['macro_f1_change']:>+7.2f} "
                   f"{r.get('latency_ms', 0):>8.2f}  {'yes' if r['shipped'] else 'no'}")
    test = manifest.get("test_metrics")
    if test:
        click.echo(f"held-out test ({test['texts']} texts of {test_data}, through the bundle at its thresholds): "
                   f"micro-F1 {100 * test['micro_f1']:.1f}, macro-F1 {100 * test['macro_f1']:.1f}, weighted-F1 "
                   f"{100 * test['weighted_f1']:.1f}, exact match {100 * test['subset_accuracy']:.1f}%")
    else:
        click.echo("no held-out test scores: export with --test FILE (e.g. the test split of `kdedge data split`)")


if __name__ == "__main__":
    main()
