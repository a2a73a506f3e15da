"""Training configuration: one documented dataclass; config files use the CLI option names as keys."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults are kdedge's; `--config paper` restores the paper's."""

    arch: str = "textcnn"                 # textcnn | textrnn | han | gru_att
    mode: str = "all"                     # teacher | student | kd | all
    seed: int = 0
    val_split: float = 0.1                # share of the training texts held out for early stopping/thresholds
    # segmentation
    segmenter: str = "jieba"              # jieba | ckip | char
    ckip_model: str | None = None         # local directory of a CKIP (BERT token-classification) model
    convert: str = "auto"                 # auto | t2s | none: script conversion before segmentation
    jieba_hmm: bool = True
    # vocabulary and vectors
    vectors: str | None = None            # word2vec text/binary file; None trains Word2Vec on the training texts
    embedding_dim: int = 300
    w2v_epochs: int = 10
    min_count: int = 1                    # vocabulary minimum token count (training texts)
    max_vocab: int = 30000
    trainable_embeddings: bool = False    # True: the students fine-tune the table (teacher towers share it frozen)
    # input shape
    max_len: int = 80                     # tokens per text (sequence models; p99 of healthner9 is 83)
    max_sentences: int = 8                # HAN
    max_sentence_len: int = 40            # HAN
    # optimisation (paper: Adam 1e-3, BCE, 30 epochs, patience 10, batch 32 / 128 for gru_att)
    batch_size: int | None = None         # None: the architecture's default
    epochs: int = 30
    patience: int = 10
    learning_rate: float = 1e-3
    dropout: float = 0.5
    monitor: str = "val_macro_f1"         # val_macro_f1 (macro-F1 at tuned thresholds) | val_loss (paper: BCE)
    # distillation: loss = alpha*BCE(y, s) + (1-alpha)*T^2*BCE(sigmoid(z_t/T), sigmoid(z_s/T)).
    # A list (CLI: "0.25,0.5,0.75") is a search: one KD student per (alpha, T) pair, the best on validation kept.
    kd_alpha: float | list = 0.5
    kd_temperature: float | list = 2.0
    # the teacher and its soft targets (kdedge.teachers, kdedge.targets; measured in docs/results)
    teacher: str = "linear"               # towers (paper: one network per label) | linear (TF-IDF + LR) | ensemble
    teacher_calibration: str = "shift"    # none | shift | temperature | platt: per label, on the validation split
    teacher_crossfit: int = 0             # K >= 2: the teacher's outputs on training texts are out-of-fold (K teachers)
    kd_label_gate: bool = True            # labels where the teacher is weaker than the plain student learn from y only
    pos_weight: str = "none"              # none | sqrt | balanced: per-label weight of positives in the students' BCE
    # thresholds
    threshold_min_support: int = 3        # labels with fewer validation positives keep 0.5
    # devices: auto | one | mirrored | multiworker (kdedge.distribute; batch_size is the global batch)
    strategy: str = "auto"
    arch_params: dict = field(default_factory=dict)  # per-architecture overrides (see kdedge.models)

    def __post_init__(self):
        """Check the choices and ranges that do not need data, so a bad option fails before any training."""
        from kdedge.distribute import STRATEGIES
        from kdedge.targets import CALIBRATIONS
        from kdedge.teachers import TEACHERS

        for name, choices in (("teacher", TEACHERS), ("teacher_calibration", CALIBRATIONS),
                              ("mode", ("teacher", "student", "kd", "all")),
                              ("monitor", ("val_loss", "val_macro_f1")), ("pos_weight", ("none", "sqrt", "balanced")),
                              ("strategy", STRATEGIES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"option {name} (--{name.replace('_', '-')}) must be one of {', '.join(choices)}, "
                                  f"not {getattr(self, name)!r}")
        if self.teacher_crossfit == 1 or self.teacher_crossfit < 0:
            raise ConfigError("option teacher_crossfit (--teacher-crossfit) must be 0 (off) or at least 2, "
                              f"not {self.teacher_crossfit}")
        self.kd_grid()

    def resolved_batch_size(self) -> int:
        """The batch size in force (paper: 32, gru_att 128)."""
        if self.batch_size:
            return self.batch_size
        return 128 if self.arch == "gru_att" else 32

    def kd_grid(self) -> list[tuple[float, float]]:
        """Every (alpha, temperature) pair to try for the KD student (one pair unless a list is given)."""
        alphas = self.kd_alpha if isinstance(self.kd_alpha, list) else [self.kd_alpha]
        temperatures = self.kd_temperature if isinstance(self.kd_temperature, list) else [self.kd_temperature]
        if not alphas or not temperatures:
            raise ConfigError("kd_alpha and kd_temperature need at least one value")
        if any(not 0.0 <= a <= 1.0 for a in alphas) or any(t <= 0.0 for t in temperatures):
            raise ConfigError(f"kd_alpha must be within [0, 1] and kd_temperature > 0, not {alphas} / {temperatures}")
        return [(float(a), float(t)) for a in alphas for t in temperatures]

    def to_dict(self) -> dict:
        """Plain-JSON form, as written to a run's config.json."""
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


class ConfigError(ValueError):
    """An unreadable config file or an unknown key."""


def read_config_file(name_or_path: str) -> dict:
    """Read a named config (`paper`, `default`) or a TOML/YAML/JSON file into option values."""
    path = Path(name_or_path)
    if not path.exists() and (CONFIG_DIR / f"{name_or_path}.toml").exists():
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"{name_or_path}: no such config file or named config "
                          f"({', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.toml')))})")
    text = path.read_text(encoding="utf-8")
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
    return {k.replace("-", "_"): v for k, v in values.items()}


def make_config(file_values: dict | None = None, **cli_values) -> TrainConfig:
    """Defaults, overridden by a config file's values, overridden by CLI values that are not None."""
    merged = dict(file_values or {})
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    unknown = sorted(set(merged) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    return TrainConfig(**{k: _checked(k, v) for k, v in merged.items()})


_KINDS = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list}


def _checked(name: str, value):
    """`value` as the field's declared type (numbers may be given as numeric strings, e.g. YAML's 1e-3)."""
    kinds = [k.strip() for k in str(TrainConfig.__dataclass_fields__[name].type).split("|")]
    if value is None and "None" in kinds:
        return value
    for kind in kinds:
        cls = _KINDS.get(kind)
        if cls is None:
            continue
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
            return float(value)
        if cls in (int, float) and isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
    raise ConfigError(f"option {name} must be {' or '.join(kinds)}, not {value!r}")
