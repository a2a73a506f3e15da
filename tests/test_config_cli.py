"""kdedge.config (files, named configs, CLI overrides, validation) and the `kdedge train` command."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kdedge.cli import build_config
from kdedge.cli import main as cli
from kdedge.config import CONFIG_DIR, ConfigError, TrainConfig, make_config, read_config_file

TOML = """
epochs = 7
seed = 3
kd-alpha = 0.2
monitor = "val_loss"
arch_params = { filters = 4 }
"""
YAML = """
epochs: 7
seed: 3
kd-alpha: 0.2
monitor: val_loss
learning_rate: 1e-3   # YAML 1.1 reads this as a string
arch_params:
  filters: 4
"""


@pytest.mark.parametrize("suffix,text", [(".toml", TOML), (".yaml", YAML), (".json", json.dumps(
    {"epochs": 7, "seed": 3, "kd_alpha": 0.2, "monitor": "val_loss", "arch_params": {"filters": 4}}))])
def test_file_values_overridden_by_cli_values(tmp_path, suffix, text):
    path = tmp_path / f"cfg{suffix}"
    path.write_text(text, encoding="utf-8")
    values = read_config_file(str(path))
    assert values["kd_alpha"] == 0.2  # option names with dashes become field names
    cfg = make_config(values, epochs=2, seed=None, monitor="val_macro_f1", dropout=0.0)
    assert cfg.epochs == 2 and cfg.monitor == "val_macro_f1" and cfg.dropout == 0.0  # CLI wins
    assert cfg.seed == 3 and cfg.kd_alpha == 0.2 and cfg.arch_params == {"filters": 4}  # None: the file's value
    assert cfg.learning_rate == pytest.approx(1e-3)
    assert make_config(values).epochs == 7
    assert make_config().epochs == TrainConfig().epochs  # no file, no CLI: defaults


def test_unknown_keys_are_config_errors(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text("epochs = 3\nepochz = 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown option.*epochz"):
        make_config(read_config_file(str(path)))
    with pytest.raises(ConfigError, match="unknown option.*colour"):
        make_config({}, colour="red")


@pytest.mark.parametrize("values,message", [
    ({"epochs": "three"}, r"epochs \(--epochs\) must be int"),
    ({"epochs": 2.5}, r"epochs \(--epochs\) must be int"),
    ({"epochs": True}, r"epochs \(--epochs\) must be int"),
    ({"kd_alpha": "half"}, r"kd_alpha \(--kd-alpha\) must be float"),
    ({"trainable_embeddings": "yes"}, r"trainable_embeddings \(--trainable-embeddings\) must be bool"),
    ({"arch": 3}, r"arch \(--arch\) must be str"),
    ({"arch_params": [4]}, r"arch_params \(config file only\) must be dict"),
])
def test_values_of_the_wrong_type_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        make_config(values)


def test_numbers_are_coerced_to_the_field_type():
    cfg = make_config({"learning_rate": 1, "epochs": "4", "kd_temperature": "3", "vectors": None, "batch_size": None})
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.epochs == 4 and cfg.kd_temperature == 3.0 and cfg.vectors is None


def test_named_config_paper_loads():
    values = read_config_file("paper")
    expected = {k.replace("-", "_"): v for k, v in tomllib.loads((CONFIG_DIR / "paper.toml").read_text("utf-8")).items()}
    assert values == expected
    cfg = make_config(values)
    assert cfg.monitor == "val_loss" and cfg.embedding_dim == 300 and cfg.convert == "none"
    assert cfg.epochs == 30 and cfg.patience == 10 and cfg.kd_alpha == 0.5 and cfg.kd_temperature == 2.0
    assert make_config(values, epochs=3).epochs == 3


def test_named_config_char_loads():
    cfg = make_config(read_config_file("char"), kd_alpha="0.3")
    assert cfg.segmenter == "char" and cfg.trainable_embeddings and cfg.max_len == 128
    assert cfg.kd_grid() == [(0.3, 4.0)]  # the CLI value overrides the file


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file or named config.*paper"):
        read_config_file(str(tmp_path / "nope.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot parse"):
        read_config_file(str(broken))
    listing = tmp_path / "list.yaml"
    listing.write_text("- epochs\n- 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="table"):
        read_config_file(str(listing))


def test_build_config_takes_run_options_from_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('data = "d.jsonl"\nout = "runs/x"\nlabels-file = "labels.txt"\nepochs = 5\n', encoding="utf-8")
    cfg, run = build_config(str(path), epochs=None, seed=4)
    assert run == {"data": "d.jsonl", "out": "runs/x", "labels_file": "labels.txt"}
    assert cfg.epochs == 5 and cfg.seed == 4


# ------------------------------------------------------------------------------------------ kdedge train

def _kdedge():
    exe = Path(sys.executable).parent / "kdedge"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "kdedge.cli"]


@pytest.mark.slow
def test_cli_train_with_a_config_file(tmp_path, corpus_file):
    out = tmp_path / "run"
    config = tmp_path / "small.toml"
    config.write_text(f"""
data = "{corpus_file}"
out = "{out}"
mode = "student"
epochs = 3
embedding_dim = 16
max_len = 16
w2v_epochs = 1
batch_size = 16
val_split = 0.2
arch_params = {{ filters = 4 }}
""", encoding="utf-8")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(_kdedge() + ["train", "--config", str(config), "--epochs", "2", "-q"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"run written to {out}" in proc.stdout and "student" in proc.stdout
    assert "Traceback" not in proc.stderr
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))["config"]
    assert saved["epochs"] == 2  # the CLI overrides the file
    assert saved["embedding_dim"] == 16 and saved["mode"] == "student" and saved["arch_params"] == {"filters": 4}
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert list(metrics["modes"]) == ["student"] and metrics["modes"]["student"]["epochs_run"] <= 2
    # the same command again refuses to overwrite the run
    proc = subprocess.run(_kdedge() + ["train", "--config", str(config), "-q"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr


def _invoke(args):
    result = CliRunner().invoke(cli, args)
    assert "Traceback" not in result.output
    assert not result.exception or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.mark.parametrize("args,message", [
    (["--epochs", "three"], "Invalid value for '--epochs'"),
    (["--arch", "bert"], "Invalid value for '--arch'"),
    (["--monitor", "accuracy"], "Invalid value for '--monitor'"),
])
def test_cli_train_bad_option_value_exits_2(tmp_path, corpus_file, args, message):
    result = _invoke(["train", "--data", corpus_file, "--out", str(tmp_path / "run")] + args)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content,message", [
    ("epochs = 2\nbogus = 1\n", "unknown option(s): bogus"),
    ('"\\u001b]0;x" = 1\n', r"unknown option(s): \x1b]0;x"),  # a control character is escaped
    ('epochs = "two"\n', "option epochs (--epochs) must be int"),
    ("epochs = = 2\n", "cannot parse"),
])
def test_cli_train_bad_config_file_exits_2(tmp_path, corpus_file, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content, encoding="utf-8")
    result = _invoke(["train", "--config", str(config), "--data", corpus_file, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.stderr.startswith("kdedge: error: ") and message in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name,content,message", [
    ("bad.yaml", b"epochs: 2\n1: 2\n", "option names are strings; 1 is not"),
    ("bad.toml", b"epochs = 2\n# caf\xe9\n", "line 2: not UTF-8 (byte 16)"),
    ("big.json", b"{" + b" " * (1 << 20) + b"}", "a config file is at most 1048576"),
])
def test_cli_train_unreadable_config_file_exits_2(tmp_path, corpus_file, name, content, message):
    config = tmp_path / name
    config.write_bytes(content)
    result = _invoke(["train", "--config", str(config), "--data", corpus_file, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.stderr.startswith("kdedge: error: ") and message in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_cli_train_needs_data_and_out(tmp_path):
    result = _invoke(["train", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--data and --out are required" in result.output


def test_cli_train_bad_validation_share_exits_2(tmp_path, corpus_file):
    result = _invoke(["train", "--data", corpus_file, "--out", str(tmp_path / "run"), "--val-split", "1.5", "-q"])
    assert result.exit_code == 2 and "kdedge: error: " in result.stderr and "between 0 and 1" in result.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- validation when built

@pytest.mark.parametrize("values,message", [
    ({"epochs": 0}, r"epochs \(--epochs\) must be at least 1, not 0"),
    ({"patience": -1}, r"patience \(--patience\) must be at least 0"),
    ({"max_len": 0}, r"max_len \(--max-len\) must be at least 1"),
    ({"max_sentences": 0}, r"max_sentences \(--max-sentences\) must be at least 1"),
    ({"max_sentence_len": -2}, r"max_sentence_len \(--max-sentence-len\) must be at least 1"),
    ({"batch_size": 0}, r"batch_size \(--batch-size\) must be at least 1"),
    ({"learning_rate": 0}, r"learning_rate \(--learning-rate\) must be greater than 0"),
    ({"learning_rate": float("inf")}, r"learning_rate \(--learning-rate\) must be greater than 0 \(and finite\)"),
    ({"learning_rate": float("nan")}, r"learning_rate \(--learning-rate\) must be greater than 0"),
    ({"dropout": 1.0}, r"dropout \(--dropout\) must be between 0 and 1 \(0 <= dropout < 1\)"),
    ({"dropout": -0.1}, r"dropout \(--dropout\) must be between 0 and 1"),
    ({"val_split": 0.0}, r"val_split \(--val-split\) must be between 0 and 1 \(0 < val_split < 1\)"),
    ({"val_split": 1.0}, r"val_split \(--val-split\) must be between 0 and 1"),
    ({"embedding_dim": 0}, r"embedding_dim \(--embedding-dim\) must be at least 1"),
    ({"w2v_epochs": 0}, r"w2v_epochs \(--w2v-epochs\) must be at least 1"),
    ({"min_count": 0}, r"min_count \(--min-count\) must be at least 1"),
    ({"max_vocab": 2}, r"max_vocab \(--max-vocab\) must be at least 3"),
    ({"threshold_min_support": 0}, r"threshold_min_support \(--threshold-min-support\) must be at least 1"),
    ({"seed": -1}, r"seed \(--seed\) must be at least 0"),
    ({"teacher_crossfit": -2}, r"teacher_crossfit \(--teacher-crossfit\) must be 0 \(off\) or at least 2"),
    ({"arch": "bert"}, r"arch \(--arch\) must be one of textcnn, textrnn, gru_att, han, not 'bert'"),
    ({"segmenter": "pkuseg"}, r"segmenter \(--segmenter\) must be one of jieba, ckip, char"),
    ({"convert": "s2t"}, r"convert \(--convert\) must be one of auto, t2s, none"),
    ({"arch_params": {"units": 4}}, r"arch_params \(config file only\): textcnn has no parameter\(s\) units; "
                                    r"it has kernel_sizes, filters"),
    ({"arch": "han", "arch_params": {"filters": 4}}, r"han has no parameter\(s\) filters"),
    ({"batch_size": "many"}, r"batch_size \(--batch-size\) must be int or None, not 'many'"),
    # nested and oversized values fail here, not as an OOM or a traceback after the data is read
    ({"epochs": int("9" * 400)}, r"epochs \(--epochs\) must be at least 1, not 9{57}\.\.\.$"),
    ({"arch_params": {"filters": 10 ** 8}}, r"filters must be an integer from 1 to 4096, not 100000000"),
    ({"arch_params": {"filters": -1}}, r"filters must be an integer from 1 to 4096, not -1"),
    ({"arch_params": {"filters": "abc"}}, r"filters must be an integer from 1 to 4096, not 'abc'"),
    ({"arch_params": {"filters": True}}, r"filters must be an integer"),
    ({"arch_params": {"kernel_sizes": []}}, r"kernel_sizes must be a list of 1 to 8 distinct integers"),
    ({"arch_params": {"kernel_sizes": [100000]}}, r"each from 1 to 64, not \[100000\]"),
    ({"arch_params": {"kernel_sizes": [3, 3]}}, r"distinct integers"),
    ({"arch_params": {"kernel_sizes": 3}}, r"kernel_sizes must be a list"),
    ({"max_len": 4, "arch_params": {"kernel_sizes": [2, 5]}}, r"kernel_sizes \[2, 5\] must not exceed max_len"),
    ({"arch": "gru_att", "arch_params": {"units": 10 ** 9}}, r"units must be an integer from 1 to 4096"),
    ({"arch": "han", "arch_params": {"attention_units": 0}}, r"attention_units must be an integer from 1 to 4096"),
])
def test_every_option_is_checked_when_the_config_is_built(values, message):
    with pytest.raises(ConfigError, match=message):
        make_config(values)
    with pytest.raises(ConfigError, match=message):  # the Python API checks the same way
        TrainConfig(**values)


def test_values_on_the_edge_of_their_range_are_accepted():
    cfg = make_config({"epochs": 1, "patience": 0, "dropout": 0.0, "max_vocab": 3, "batch_size": None, "seed": 0,
                       "kd_alpha": [0, 1], "arch": "han", "arch_params": {"units": 4}, "teacher_crossfit": 2})
    assert cfg.resolved_batch_size() == 32 and cfg.kd_alpha == [0.0, 1.0]
    assert make_config({"arch": "gru_att"}).resolved_batch_size() == 128
    assert make_config({"arch": "gru_att", "batch_size": 8}).resolved_batch_size() == 8


def test_every_option_but_arch_params_has_a_train_and_cv_flag():
    from kdedge.config import NO_FLAG, _field_types

    for command in (cli.commands["train"], cli.commands["cv"]):
        flags = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        missing = {name for name in _field_types() if f"--{name.replace('_', '-')}" not in flags}
        if command.name == "cv":  # cv runs every --archs and every mode
            missing -= {"arch", "mode"}
        assert missing == set(NO_FLAG), command.name


def test_the_flags_take_their_types_and_choices_from_the_config():
    """One source: a choice added to kdedge.config.option_choices() (or a field's type changed) reaches every flag."""
    from kdedge.config import _field_types, option_choices

    for command in (cli.commands["train"], cli.commands["cv"]):
        for param in command.params:
            if param.name not in _field_types():
                continue
            choices = option_choices().get(param.name)
            if choices:
                assert tuple(param.type.choices) == choices, (command.name, param.name)
            elif param.is_flag:
                assert _field_types()[param.name] == (bool,), param.name
            else:
                kinds = set(_field_types()[param.name]) - {type(None)}
                want = {frozenset({int}): click.INT, frozenset({float}): click.FLOAT}.get(frozenset(kinds), click.STRING)
                assert param.type == want or isinstance(param.type, click.Path), (command.name, param.name, param.type)
    assert tuple(cli.commands["embed"].params[[p.name for p in cli.commands["embed"].params].index("segmenter")]
                 .type.choices) == option_choices()["segmenter"]


def test_config_checks_import_no_keras(tmp_path):
    script = tmp_path / "check.py"
    script.write_text("""import sys
from kdedge.config import ConfigError, make_config

make_config({"arch": "han", "arch_params": {"units": 4}}).resolved_batch_size()
try:
    make_config({"arch": "bert"})
except ConfigError:
    print(sorted(m for m in ("keras", "tensorflow") if m in sys.modules))
""", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr


@pytest.mark.parametrize("where", ["cli", "file"])
def test_cli_range_and_arch_errors_are_one_line_exit_2_before_data_is_read(tmp_path, where):
    missing = str(tmp_path / "missing.jsonl")  # never read: the config fails first
    if where == "cli":
        args = ["--epochs", "0"]
        message = "kdedge: error: option epochs (--epochs) must be at least 1, not 0\n"
    else:
        (tmp_path / "c.toml").write_text('arch = "bert"\n', encoding="utf-8")
        args = ["--config", str(tmp_path / "c.toml")]
        message = "kdedge: error: option arch (--arch) must be one of textcnn, textrnn, gru_att, han, not 'bert'\n"
    result = _invoke(["train", "--data", missing, "--out", str(tmp_path / "run")] + args)
    assert result.exit_code == 2 and result.stderr == message
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ error types

def test_kdedge_errors_are_one_line_and_debug_shows_their_traceback(tmp_path, corpus_file):
    args = ["train", "--data", corpus_file, "--out", str(tmp_path / "run"), "--epochs", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and result.stderr == "kdedge: error: option epochs (--epochs) must be at least 1, not 0\n"
    result = CliRunner().invoke(cli, ["--debug"] + args)
    assert isinstance(result.exception, ConfigError) and result.exit_code == 1  # raised through to the traceback


def test_an_error_that_is_not_kdedges_shows_its_traceback():
    import click

    from kdedge.cli import user_errors
    from kdedge.errors import KdedgeError, OutputExistsError, UsageError

    @click.command()
    @click.argument("kind")
    @user_errors
    def command(kind):
        raise {"bug": KeyError("a key"), "os": OSError("disk"), "usage": UsageError("--jobs 9: only 2 CPU cores"),
               "exists": OutputExistsError("out: already exists"), "missing": FileNotFoundError("in.txt")}[kind]

    for kind in ("bug", "os"):  # a bug, or an error kdedge did not expect: the traceback, not a one-line message
        result = CliRunner().invoke(command, [kind])
        assert result.exit_code == 1 and result.stderr == "" and type(result.exception).__name__ in ("KeyError", "OSError")
    for kind, message in (("usage", "--jobs 9: only 2 CPU cores"), ("exists", "out: already exists"),
                          ("missing", "in.txt")):
        result = CliRunner().invoke(command, [kind])
        assert result.exit_code == 2 and result.stderr == f"kdedge: error: {message}\n"
    from kdedge.config import ConfigError
    from kdedge.text.data import DataError
    from kdedge_export.errors import ExportError

    assert all(issubclass(e, KdedgeError) for e in (ConfigError, DataError, ExportError, UsageError, OutputExistsError))
    assert issubclass(OutputExistsError, FileExistsError) and issubclass(UsageError, ValueError)


# ------------------------------------------------------------------------------------------ console

def test_train_help_shows_each_default_from_the_config():
    from kdedge.config import TRAIN_DEFAULTS

    help_text = " ".join(CliRunner().invoke(cli, ["train", "--help"]).output.split())
    for option, shown in (("--epochs INTEGER", "30"), ("--teacher [auto|towers|linear|ensemble|students]", "auto"),
                          ("--learning-rate FLOAT", "0.001"), ("--kd-label-gate / --no-kd-label-gate", "kd-label-gate"),
                          ("--trainable-embeddings / --frozen-embeddings", "trainable-embeddings"),
                          ("--batch-size INTEGER", "per architecture: textcnn 32, textrnn 32, gru_att 128, han 32")):
        assert f"[default: {shown}]" in help_text.split(f"{option} ", 1)[1].split(" --", 1)[0], option
    command = cli.commands["train"]
    for param in command.params:
        name = param.name
        if name in TRAIN_DEFAULTS and TRAIN_DEFAULTS[name] is not None:
            assert "[default: " in (param.help or ""), name


def test_every_flag_s_help_text_is_the_config_s():
    """One source: what an option means is written once, on its TrainConfig field (kdedge.config.OPTION_HELP)."""
    from kdedge.config import OPTION_HELP, TRAIN_DEFAULTS

    assert set(OPTION_HELP) == set(TRAIN_DEFAULTS) and all(text.strip() for text in OPTION_HELP.values())
    for command in (cli.commands["train"], cli.commands["cv"]):
        for param in command.params:
            if param.name in OPTION_HELP:
                assert param.help.split("  [default: ")[0] == OPTION_HELP[param.name], (command.name, param.name)


def test_embed_shows_its_progress(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"今天我们讨论足球比赛和股票市场{i}。\n" for i in range(50)), encoding="utf-8")
    result = CliRunner().invoke(cli, ["embed", "--corpus", str(corpus), "--out", str(tmp_path / "v.txt"), "--dim", "8",
                                      "--epochs", "2", "--min-count", "1", "--workers", "1", "--segmenter", "char"])
    assert result.exit_code == 0, result.output
    assert "segmenting:" in result.stderr and "Word2Vec 8-d, 2 epochs:" in result.stderr and " tokens/s]" in result.stderr
    quiet = CliRunner().invoke(cli, ["embed", "--corpus", str(corpus), "--out", str(tmp_path / "w.txt"), "--dim", "8",
                                     "--epochs", "2", "--min-count", "1", "--workers", "1", "--segmenter", "char", "-q"])
    assert quiet.exit_code == 0 and "Word2Vec 8-d" not in quiet.stderr
    assert (tmp_path / "v.txt").read_text(encoding="utf-8") == (tmp_path / "w.txt").read_text(encoding="utf-8")


def _embed(tmp_path, out, *args):
    return CliRunner().invoke(cli, ["embed", "--out", str(tmp_path / out), "--dim", "8", "--epochs", "2",
                                    "--min-count", "1", "--workers", "1", "-q", *args])


def test_embed_reads_data_files_leaves_out_excluded_texts_and_records_what_it_read(tmp_path):
    """The vectors' corpus is pinned: a data file's texts are corpus lines, --exclude's texts are left out of every
    source, and OUT.json holds each file's hash and the hash of the lines used, so a recipe can be checked."""
    notes = tmp_path / "notes.txt"
    notes.write_text("今天我们讨论足球比赛。\n\n病人头痛发烧三天。\n", encoding="utf-8")
    rows = [{"id": "a", "text": "病人头痛发烧三天。", "labels": ["SYMP"]},
            {"id": "b", "text": "服用阿司匹林后好转。\n复诊一次。", "labels": ["DRUG"]},
            {"id": "c", "text": "医生建议多喝水。", "labels": ["SYMP"]}]
    data, held_out = tmp_path / "data.jsonl", tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    held_out.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8")
    result = _embed(tmp_path, "v.txt", "--corpus", str(notes), "--corpus", str(data), "--exclude", str(held_out))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "v.txt.json").read_text(encoding="utf-8"))
    used = ["今天我们讨论足球比赛。", "服用阿司匹林后好转。", "复诊一次。", "医生建议多喝水。"]
    assert record["corpus"]["lines"] == 4 and record["corpus"]["corpus_sha256"] == hashlib.sha256(
        "".join(line + "\n" for line in used).encode("utf-8")).hexdigest()
    assert [(s["lines"], s["excluded_lines"]) for s in record["corpus"]["sources"]] == [(1, 1), (3, 1)]
    assert record["corpus"]["sources"][1]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert record["corpus"]["exclude"][0]["texts"] == 1 and record["reproducible"] is True
    assert record["vectors_sha256"] == hashlib.sha256((tmp_path / "v.txt").read_bytes()).hexdigest()
    words = [line.split()[0] for line in (tmp_path / "v.txt").read_text(encoding="utf-8").splitlines()[1:]]
    assert "诊" in words and "头" not in words  # 头 is only in the excluded text
    # the same corpus written as one text file gives the same corpus hash and the same vectors (one worker)
    (tmp_path / "same.txt").write_text("".join(line + "\n" for line in used), encoding="utf-8")
    assert _embed(tmp_path, "w.txt", "--corpus", str(tmp_path / "same.txt")).exit_code == 0
    again = json.loads((tmp_path / "w.txt.json").read_text(encoding="utf-8"))
    assert again["corpus"]["corpus_sha256"] == record["corpus"]["corpus_sha256"]
    assert (tmp_path / "w.txt").read_bytes() == (tmp_path / "v.txt").read_bytes()


def test_embed_bad_corpus_is_named_and_nothing_is_written(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好", "labels": []}\n{"text": 3, "labels": []}\n', encoding="utf-8")
    result = _embed(tmp_path, "v.txt", "--corpus", str(bad))
    assert result.exit_code == 2 and f"{bad}:2: field 'text' must be a string" in result.stderr, result.stderr
    everything = tmp_path / "all.txt"
    everything.write_text("好\n", encoding="utf-8")
    gone = _embed(tmp_path, "v.txt", "--corpus", str(everything), "--exclude", str(bad))
    assert gone.exit_code == 2 and "field 'text' must be a string" in gone.stderr
    (tmp_path / "ok.jsonl").write_text('{"text": "好", "labels": []}\n', encoding="utf-8")
    empty = _embed(tmp_path, "v.txt", "--corpus", str(everything), "--exclude", str(tmp_path / "ok.jsonl"))
    assert empty.exit_code == 2 and "the corpus holds no text outside the --exclude files" in empty.stderr
    missing = _embed(tmp_path, "v.txt", "--corpus", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "nowhere: file not found" in missing.stderr
    assert not (tmp_path / "v.txt").exists() and not (tmp_path / "v.txt.json").exists()


def test_tensorflow_log_is_quiet_unless_verbose(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    args = ["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "bundle")]  # imports TensorFlow, then fails
    quiet = subprocess.run(_kdedge() + args, env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 2 and quiet.stderr.startswith("kdedge: error: "), quiet.stderr
    assert len(quiet.stderr.splitlines()) == 1, quiet.stderr  # no oneDNN, CUDA-probing or absl lines
    verbose = subprocess.run(_kdedge() + ["--verbose"] + args, env=env, capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 2 and verbose.stderr.endswith(quiet.stderr)
    assert len(verbose.stderr.splitlines()) > 1, verbose.stderr  # TensorFlow's own lines are back


def test_cv_unknown_architecture_is_refused_before_data_is_read(tmp_path):
    result = _invoke(["cv", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "cv"),
                      "--archs", "textcnn,bert"])
    assert result.exit_code == 2
    assert result.stderr == "kdedge: error: --archs: unknown architecture 'bert'; choose from textcnn, textrnn, gru_att, han\n"
    assert not (tmp_path / "cv").exists()


def test_train_summary_names_every_column_and_marks_the_selected_student():
    from kdedge.cli import summary_table

    scores = {"micro_f1": 0.9, "macro_f1": 0.8, "weighted_f1": 0.85, "subset_accuracy": 0.5}
    metrics = {"modes": {m: {"at_0.5": scores, "tuned": {**scores, "macro_f1": 0.81}, "seconds": 12.4}
                         for m in ("teacher", "student", "kd")},
               "selected": {"mode": "kd", "reason": "validation macro-f1: KD student 0.81, plain student 0.80"}}
    lines = summary_table(metrics)
    header = lines[1].split()
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert header == ["mode", "micro", "macro", "wtd", "subset", "|", "micro", "macro", "wtd", "subset", "|"]
    assert rows["kd"].split()[:2] == ["kd", "*"] and "*" not in rows["student"]
    values = rows["student"].replace("|", " ").split()[1:]
    assert values == ["90.0", "80.0", "85.0", "50.0", "90.0", "81.0", "85.0", "50.0", "12"]
    assert lines[-1].startswith("* selected for export: validation macro-f1")


def test_teacher_towers_share_a_width_budget():
    """Issue 17: the towers teacher's cost must not grow with the label count like n full networks."""
    from kdedge.networks.architectures import architecture

    cnn, gru = architecture("textcnn"), architecture("gru_att")
    params = cnn.params()
    assert cnn.tower_params(params, 9, 3.0)["filters"] == 33
    assert cnn.tower_params(params, 40, 3.0)["filters"] == 8          # never narrower than 8
    assert cnn.tower_params(params, 2, 3.0)["filters"] == 100         # never wider than the network
    assert cnn.tower_params(params, 9, 0)["filters"] == 100           # the paper: full width
    assert gru.tower_params(gru.params(), 20, 3.0) == {"units": 19, "attention_units": 100}
    assert TrainConfig().teacher_width_budget == 3.0
    assert make_config(read_config_file("paper")).teacher_width_budget == 0
    with pytest.raises(ConfigError, match="teacher-width-budget"):
        TrainConfig(teacher_width_budget=-1)


def test_console_log_hides_gensim_chatter_in_the_cli_and_in_fold_workers(tmp_path):
    """`kdedge cv --jobs 2` printed gensim's "KeyedVectors lifecycle event {…}" dicts: fold workers set up
    their own logging. The CLI, fold workers and Ray tasks now all call tflog.log_to_stderr."""
    vectors = tmp_path / "v.txt"
    vectors.write_text("2 3\n頭 1 0 0\n痛 0 1 0\n", encoding="utf-8")
    script = ("import logging\nfrom kdedge.tflog import log_to_stderr\nlog_to_stderr()\n"
              "from kdedge.text.embed import load_vectors\n"
              f"load_vectors({str(vectors)!r})\n"
              "logging.getLogger('kdedge').info('kdedge message')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "kdedge message"


def test_a_config_is_frozen_once_built_and_a_number_beyond_float_is_a_config_error():
    import dataclasses

    from kdedge.config import ConfigError, make_config

    cfg = make_config({"epochs": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 4
    assert dataclasses.replace(cfg, epochs=4).epochs == 4
    with pytest.raises(ConfigError, match=r"dropout \(--dropout\) must be .* not 1000") as caught:
        make_config({"dropout": 10 ** 400})  # JSON and YAML files can hold it
    assert caught.value.option == "dropout"
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg, dropout=2.0)  # a copy is checked too


@pytest.mark.parametrize("record, option, message", [
    ({"epochs": "3"}, "epochs", r"epochs \(--epochs\) must be int, not '3'"),      # a file may say "3"; a run may not
    ({"kd_alpha": [True]}, "kd_alpha", "must be float or list"),
    ({"nope": 1}, "nope", "unknown option"),
    ({"arch": "bert"}, "arch", "must be one of"),
    ({"arch_params": {"filters": -1}}, "arch_params", "filters must be an integer from 1"),
])
def test_a_run_s_recorded_config_is_read_strictly_with_every_check(record, option, message):
    from kdedge.config import ConfigError, config_from_record, make_config

    with pytest.raises(ConfigError, match=message) as caught:
        config_from_record(record)
    assert caught.value.option == option
    written = make_config({"epochs": 7, "kd_alpha": [0.25, 0.5]}).to_dict()
    assert config_from_record(written) == make_config({"epochs": 7, "kd_alpha": [0.25, 0.5]})
