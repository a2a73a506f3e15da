"""Training configuration: one documented dataclass; config files use the CLI option names as keys."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from kdedge.text.data import shown_names
from kdedge.errors import KdedgeError

CONFIG_DIR = Path(__file__).parent / "configs"
MAX_CONFIG_BYTES = 1 << 20
MODES = ("teacher", "student", "kd", "all")
CONVERTS = ("auto", "t2s", "none")
MONITORS = ("val_loss", "val_macro_f1")
POS_WEIGHTS = ("none", "sqrt", "balanced")
KD_INITS = ("scratch", "student")  # where the KD student's weights start (TrainConfig.kd_init)


def option(default, help_text: str):
    """A TrainConfig field: its default and what it means (the `--help` of `kdedge train` and `kdedge cv`)."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run, checked when built and frozen after. Defaults are kdedge's;
    `--config paper` restores the paper's. `dataclasses.replace(cfg, ...)` makes a changed (and checked) copy."""

    arch: str = option("textcnn", "Student architecture: a name in kdedge.networks.architectures.")
    mode: str = option("all", "What to train: teacher, student (plain), kd, or all (and select the student to ship).")
    seed: int = option(0, "Seed of the splits, the initialisation and the batch order.")
    val_split: float = option(0.1, "Share of the training texts held out for early stopping and thresholds.")
    # segmentation
    segmenter: str = option("char", "Tokens: characters (measured best, docs/results), jieba words or CKIP words.")
    ckip_model: str | None = option(None, "Local CKIP model directory (segmenter ckip).")
    convert: str = option("auto", "Script conversion before segmentation (auto: t2s for Traditional text).")
    jieba_hmm: bool = option(True, "jieba's HMM for words not in its dictionary.")
    # vocabulary and vectors
    vectors: str | None = option(None, "word2vec text/binary file of pre-trained vectors (none: Word2Vec is "
                                       "trained on the training texts).")
    embedding_dim: int = option(300, "Size of the Word2Vec trained when --vectors is not given.")
    w2v_epochs: int = option(10, "Epochs of the Word2Vec trained when --vectors is not given.")
    min_count: int = option(1, "Vocabulary: minimum count of a token in the training texts.")
    max_vocab: int = option(30000, "Vocabulary: at most this many tokens, the most frequent.")
    trainable_embeddings: bool = option(True, "The students fine-tune the vector table (a towers teacher shares it "
                                              "frozen).")
    # input shape (characters: healthner9 paper2724 p95 108, p99 142)
    max_len: int = option(128, "Tokens per text the network reads (training cuts a longer text; an exported bundle reads it in "
                                  "windows of this length).")
    max_sentences: int = option(8, "HAN: sentences per text.")
    max_sentence_len: int = option(40, "HAN: tokens per sentence.")
    # optimisation (paper: Adam 1e-3, BCE, 30 epochs, patience 10, batch 32 / 128 for gru_att)
    batch_size: int | None = option(None, "Texts per step (the global batch under tf.distribute).")
    epochs: int = option(30, "Most epochs per network.")
    patience: int = option(10, "Epochs without a better validation score before training stops.")
    plain_run_out: bool = option(True, "The plain student trains all --epochs and keeps the best of them on validation "
                                       "(patience stops only the teacher and the KD student): on small validation "
                                       "splits patience stopped it before its best epoch (docs/results).")
    learning_rate: float = option(1e-3, "Adam's learning rate.")
    dropout: float = option(0.5, "Dropout before the output layer.")
    monitor: str = option("val_macro_f1", "Epoch selection: val_macro_f1 (macro-F1 at tuned thresholds) or val_loss "
                                          "(the paper's BCE).")
    # distillation: loss = alpha*BCE(y, s) + (1-alpha)*T^2*BCE(sigmoid(z_t/T), sigmoid(z_s/T))
    kd_alpha: float | list = option(0.5, "Weight of the true labels in the KD loss; a list (0.25,0.5,0.75) is "
                                         "searched on the validation split.")
    kd_init: str = option("student", "student: the KD student starts from the plain student's kept weights, which "
                                     "stay a candidate of its epoch selection (epoch 0), so patience can stop it after "
                                     "--patience epochs; scratch: from fresh weights, as the plain student does (the "
                                     "paper).")
    kd_temperature: float | list = option(4.0, "KD temperature; a list (1,2,4) is searched on the validation split.")
    # the teacher and its soft targets (kdedge.teaching.teachers, kdedge.teaching.targets; measured in docs/results)
    teacher: str = option("auto", "auto: linear, and towers too when linear does not beat the plain student (the "
                                  "better teaches); towers: one network per label (the paper); linear: TF-IDF + one "
                                  "logistic regression per label (seconds); ensemble: both, calibrated and averaged; "
                                  "students: K cross-fitted plain students of the architecture (self-distillation).")
    teacher_calibration: str = option("shift", "Per-label calibration of the teacher before its outputs become soft "
                                               "targets (shift: its tuned threshold maps to 0.5), fitted on its "
                                               "out-of-fold training outputs when cross-fitted, else on the "
                                               "validation split.")
    teacher_crossfit: int = option(0, "K >= 2: soft targets on training texts come from K teachers that did not see "
                                      "them (out-of-fold), and the calibration and gate are fitted on those outputs; "
                                      "0: off (the teacher's own outputs; calibration and gate fitted on the "
                                      "validation split; measured better, docs/results).")
    teacher_width_budget: float = option(3.0, "towers teacher: the towers together are about this many times as wide "
                                              "as one network (each tower's filters/units × budget / labels, at least "
                                              "8); 0: every tower full width (the paper).")
    kd_label_gate: bool = option(True, "Labels where the teacher is not shown better than the plain student (held-out "
                                       "F1 on ≥ 5 positives) learn from the true labels only.")
    select_confidence: float = option(0.8, "Ship the KD student only when it beats the plain student in this share of "
                                           "bootstrap resamples of the validation split (by --select-metric); "
                                           "else the plain student.")
    select_metric: str = option("ap", "What the KD-vs-plain selection compares: ap (macro average precision, no "
                                      "thresholds; measured better, bench/selection_replay.py) or f1 (F1 at "
                                      "cross-fitted thresholds, and not behind on micro-F1: the rule before).")
    pos_weight: str = option("none", "Weight of positive labels in the students' BCE (sqrt: √(negatives/positives); "
                                     "balanced: negatives/positives).")
    # thresholds
    threshold_min_support: int = option(3, "Labels with fewer validation positives keep the threshold 0.5.")
    # devices (kdedge.training.distribute)
    strategy: str = option("auto", "tf.distribute: one device; mirrored (this machine's GPUs, or the CPU split by "
                                   "--cpu-replicas); multiworker (reads TF_CONFIG); auto: mirrored with more than one "
                                   "GPU or CPU replica. --batch-size is the global batch.")
    cpu_replicas: int = option(1, "Split the CPU into N logical devices before TensorFlow starts, so --strategy "
                                  "mirrored (or auto) trains N replicas on this machine's CPU (each gets "
                                  "--batch-size/N texts of a step).")
    peer_timeout: float = option(300.0, "--strategy multiworker: seconds to wait for every worker of TF_CONFIG to "
                                        "start before giving up.")
    arch_params: dict = field(default_factory=dict, metadata={"help": "Per-architecture overrides (config file only; "
                                                                      "see kdedge.networks.models)."})

    def __post_init__(self):
        """Check every option (type, choice, range) when the config is built, before any data is read."""
        for name, kind in _field_types().items():
            object.__setattr__(self, name, _checked(name, getattr(self, name), kind))  # coerced once, while built
        for name, choices in option_choices().items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"option {_named(name)} must be one of {', '.join(choices)}, "
                                  f"not {_shown(getattr(self, name))}", name)
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            if not isinstance(value, (list, type(None))) and value not in allowed:
                raise ConfigError(f"option {_named(name)} must be {allowed.describe(name)}, not {_shown(value)}", name)
        if self.cpu_replicas > 1 and self.strategy in ("one", "multiworker"):
            raise ConfigError(f"option {_named('cpu_replicas')} {self.cpu_replicas} gives replicas to "
                              f"--strategy mirrored (or auto), not {self.strategy} "
                              + ("(one device)" if self.strategy == "one" else "(one CPU replica per worker)"),
                              "cpu_replicas")
        if self.teacher_crossfit == 1 or self.teacher_crossfit < 0:
            raise ConfigError(f"option {_named('teacher_crossfit')} must be 0 (off) or at least 2, "
                              f"not {self.teacher_crossfit}", "teacher_crossfit")
        if self.teacher == "students" and not self.teacher_crossfit:
            raise ConfigError(f"option {_named('teacher')} students needs {_named('teacher_crossfit')} K >= 2: "
                              "each student of the teacher predicts the training texts it did not see", "teacher")
        try:
            from kdedge.networks.architectures import architecture

            params = architecture(self.arch).params(self.arch_params)
        except ValueError as exc:
            raise ConfigError(f"option {_named('arch_params')}: {exc}", "arch_params") from None
        if max(params.get("kernel_sizes", [0])) > self.max_len:
            raise ConfigError(f"option {_named('arch_params')}: kernel_sizes {params['kernel_sizes']} must not exceed "
                              f"{_named('max_len')} {self.max_len}", "arch_params")
        self.kd_grid()

    def resolved_batch_size(self) -> int:
        """The batch size in force (paper: 32, gru_att 128)."""
        from kdedge.networks.architectures import architecture

        return self.batch_size or architecture(self.arch).batch_size

    def kd_grid(self) -> list[tuple[float, float]]:
        """Every (alpha, temperature) pair to try for the KD student (one pair unless a list is given)."""
        alphas = self.kd_alpha if isinstance(self.kd_alpha, list) else [self.kd_alpha]
        temperatures = self.kd_temperature if isinstance(self.kd_temperature, list) else [self.kd_temperature]
        for name, values in (("kd_alpha", alphas), ("kd_temperature", temperatures)):
            if not values or not all(v in RANGES[name] for v in values):
                raise ConfigError(f"option {_named(name)} must be {RANGES[name].describe(name)} "
                                  f"(one value or a list), not {_shown(values)}", name)
        return [(float(a), float(t)) for a in alphas for t in temperatures]

    def to_dict(self) -> dict:
        """Plain-JSON form, as written to a run's config.json. Execution settings added after runs were cached
        (LATE_EXECUTION_SETTINGS) are left out at their defaults, so that the teacher cache keys and cv.json of
        earlier `kdedge cv` runs stay valid."""
        values = dataclasses.asdict(self)
        for name in LATE_EXECUTION_SETTINGS:
            if values[name] == TRAIN_DEFAULTS[name]:
                del values[name]
        return values


TRAIN_DEFAULTS = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                  for f in dataclasses.fields(TrainConfig)}
OPTION_HELP = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
# How training runs, not what it learns (kdedge.training.distribute): a resume or a cached teacher need not repeat them.
EXECUTION_SETTINGS = ("strategy", "cpu_replicas", "peer_timeout")
LATE_EXECUTION_SETTINGS = ("cpu_replicas", "peer_timeout")  # added after runs were cached: see TrainConfig.to_dict
# Settings added after runs were recorded: a run recorded before one existed ran as this (today's default may differ).
SETTINGS_BEFORE_ADDED = {"plain_run_out": False, "kd_init": "scratch"}


class ConfigError(KdedgeError, ValueError):
    """An unreadable config file, an unknown key or an option value out of its type, choices or range;
    `option` names the TrainConfig field at fault, when it is one."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric option: low..high, each end open or closed; always finite."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True

    def __contains__(self, value) -> bool:
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond any float: out of every range
            return False
        return (finite and (self.low < value if self.low_open else self.low <= value)
                and (value < self.high if self.high_open else value <= self.high))

    def describe(self, name: str) -> str:
        """The range in words, e.g. `between 0 and 1 (0 < val_split < 1)` or `at least 1`."""
        if math.isinf(self.high):
            return f"greater than {self.low} (and finite)" if self.low_open else f"at least {self.low}"
        if not self.low_open and not self.high_open:
            return f"at least {self.low} and at most {self.high}"
        lt, gt = ("<" if self.low_open else "<="), ("<" if self.high_open else "<=")
        return f"between {self.low} and {self.high} ({self.low} {lt} {name} {gt} {self.high})"


# numeric options' ranges (kd_alpha and kd_temperature apply to each value of a list)
# sizes have an upper end too: a typo (--max-len 1000000000) must not allocate GBs before it fails
RANGES = {
    "seed": Range(0), "val_split": Range(0, 1, low_open=True), "embedding_dim": Range(1, 4096, high_open=False),
    "w2v_epochs": Range(1), "min_count": Range(1), "max_vocab": Range(3, 1 << 26, high_open=False),
    "max_len": Range(1, 65536, high_open=False), "max_sentences": Range(1, 4096, high_open=False),
    "max_sentence_len": Range(1, 4096, high_open=False), "batch_size": Range(1, 65536, high_open=False),
    "epochs": Range(1), "patience": Range(0),
    "learning_rate": Range(0, low_open=True), "dropout": Range(0, 1), "kd_alpha": Range(0, 1, high_open=False),
    "kd_temperature": Range(0, low_open=True), "threshold_min_support": Range(1), "teacher_width_budget": Range(0),
    "select_confidence": Range(0, 1, high_open=False), "cpu_replicas": Range(1, 1024, high_open=False),
    "peer_timeout": Range(0, low_open=True),
}
NO_FLAG = ("arch_params",)  # set in a config file only


def _shown(value, limit: int = 60) -> str:
    """`value` as an error message quotes it: its repr, cut to `limit` characters (a 400-digit number, a long list)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _named(name: str) -> str:
    """An option as errors name it: `epochs (--epochs)`, or `arch_params (config file only)`."""
    return f"{name} ({'config file only' if name in NO_FLAG else '--' + name.replace('_', '-')})"


def option_choices() -> dict[str, tuple]:
    """Options with a closed set of values → their choices (the lists live with the code that uses them; the CLI's
    choices and the config check both come from here)."""
    from kdedge.networks.architectures import ARCHITECTURES
    from kdedge.training.distribute import STRATEGIES
    from kdedge.text.segment import SEGMENTERS
    from kdedge.teaching.targets import CALIBRATIONS
    from kdedge.teaching.teachers import TEACHER_CHOICES
    from kdedge.training.selection import SELECTION_METRICS

    return {"arch": tuple(ARCHITECTURES), "mode": MODES, "segmenter": SEGMENTERS, "convert": CONVERTS,
            "monitor": MONITORS, "teacher": TEACHER_CHOICES, "teacher_calibration": CALIBRATIONS,
            "pos_weight": POS_WEIGHTS, "strategy": STRATEGIES, "select_metric": tuple(SELECTION_METRICS),
            "kd_init": KD_INITS}


def option_type(name: str):
    """The CLI value type of the TrainConfig field `name`: its choices, int or float, or None (a string the
    config check parses: a path, or a number list such as --kd-alpha 0.25,0.5). Bool fields are on/off flags."""
    choices = option_choices().get(name)
    if choices:
        return choices
    kinds = set(_field_types()[name]) - {type(None)}
    return kinds.pop() if kinds in ({int}, {float}) else None


@functools.cache
def _field_types() -> dict[str, tuple]:
    """Each field → the types it accepts, from the dataclass's type hints (`int | None` → (int, NoneType))."""
    return {name: typing.get_args(hint) or (hint,) for name, hint in typing.get_type_hints(TrainConfig).items()}


def named_configs() -> list[str]:
    """The configs `--config NAME` accepts (kdedge/configs/NAME.toml)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def read_config_file(name_or_path: str) -> dict:
    """Read a named config (`named_configs()`) or a TOML/YAML/JSON file into option values."""
    path = Path(name_or_path)
    if not path.exists() and (CONFIG_DIR / f"{name_or_path}.toml").exists():
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"{name_or_path}: no such config file or named config ({', '.join(named_configs())})")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config file is at most {MAX_CONFIG_BYTES}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    try:
        if path.suffix == ".toml":
            values = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml
            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as exc:  # every parser's error type: report it as a config error
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: must be a table of option = value")
    for key in values:
        if not isinstance(key, str):
            raise ConfigError(f"{path}: option names are strings; {_shown(key)} is not")
    return {k.replace("-", "_"): v for k, v in values.items()}


def make_config(file_values: dict | None = None, **cli_values) -> TrainConfig:
    """Defaults, overridden by a config file's values, overridden by CLI values that are not None."""
    merged = dict(file_values or {})
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    unknown = sorted(set(merged) - set(_field_types()))
    if unknown:
        raise ConfigError(f"unknown option(s): {shown_names(unknown)}")
    return TrainConfig(**merged)


def config_from_record(values: dict) -> TrainConfig:
    """The TrainConfig a run recorded (its config.json "config", as `TrainConfig.to_dict` wrote it), read strictly:
    every key a field, every value of the field's JSON type as written (no numeric strings), then every check of a
    config built from the CLI or a file. ConfigError naming the field otherwise."""
    if not isinstance(values, dict):
        raise ConfigError(f"must be an object of training options, not {_shown(values)}")
    unknown = sorted(set(values) - set(_field_types()), key=str)
    if unknown:
        raise ConfigError(f"unknown option(s) {shown_names(map(str, unknown))} (written by another kdedge version?)",
                          str(unknown[0]))
    for name, value in values.items():
        if not _is_recorded_type(value, _field_types()[name]):
            kinds = " or ".join("None" if k is type(None) else k.__name__ for k in _field_types()[name])
            raise ConfigError(f"option {_named(name)} must be {kinds}, not {_shown(value)}", name)
    return TrainConfig(**values)


def _is_recorded_type(value, kinds: tuple) -> bool:
    """Whether `value` is one of `kinds` as JSON holds it: an int may stand for a float, a list holds numbers."""
    if value is None:
        return type(None) in kinds
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, (int, float)):
        return float in kinds or (int in kinds and isinstance(value, int))
    if isinstance(value, list):
        return list in kinds and bool(value) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     for v in value)
    return any(isinstance(value, k) for k in kinds if k not in (int, float, bool, list, type(None)))


def _checked(name: str, value, kinds: tuple):
    """`value` as one of the field's types `kinds` (numbers may be given as numeric strings, e.g. YAML's 1e-3)."""
    if value is None and type(None) in kinds:
        return value
    for cls in kinds:
        if cls is list:  # a non-empty list of numbers: [0.2, 0.5] or "0.2,0.5"
            items = value.split(",") if isinstance(value, str) else value
            if isinstance(items, list) and items and not any(isinstance(v, bool) for v in items):
                try:
                    return [float(v) for v in items]
                except (TypeError, ValueError):
                    pass
            continue
        if isinstance(value, cls) and not (cls is not bool and isinstance(value, bool)):
            return value
        if cls is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # beyond any float (10**400): left as it is, out of every range (RANGES)
                return value
        if cls in (int, float) and isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
    names = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
    raise ConfigError(f"option {_named(name)} must be {names}, not {_shown(value)}", name)
