"""The experiment schema: one validated object from YAML and/or command-line flags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hypertweaks.kinds import KINDS, METRICS, kind_of
from hypertweaks.objective import direction_of
from hypertweaks.space import KNOBS, check_knob_spec
from hypertweaks.strategies.names import (
    FINAL_NAMES,
    PRUNER_NAMES,
    SAMPLER_NAMES,
    SELECTOR_NAMES,
)

PRECISIONS = ("auto", "float32", "bfloat16")  # train.autocast


class ConfigError(ValueError):
    """The experiment is invalid; the message says which field, what was given and what is valid."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(value: str | float | int | None) -> float | None:
    """'30m', '1.5h', '90s' or a number of seconds -> seconds."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    match = _DURATION.match(str(value))
    if not match:
        clock = ":" in str(value)
        hint = " (a clock time like 1:30 is ambiguous: write 90m or 1.5h)" if clock else ""
        raise ValueError(f"cannot read {value!r} as a duration; use e.g. 90s, 30m, 2h{hint}")
    number, unit = match.groups()
    return float(number) * _UNIT_SECONDS[(unit or "s").lower()]


class Experiment(BaseModel):
    """Everything one study needs. Unknown keys are errors, not warnings."""

    model_config = ConfigDict(extra="forbid", frozen=False)
    _max_length_given: bool = PrivateAttr(True)
    _relative_in_file: set[str] = PrivateAttr(default_factory=set)  # paths made file-relative

    task: str = Field("text-classification", description="what is tuned: " + ", ".join(KINDS))
    model: str = Field(description="Hugging Face hub id, local model folder, or timm name")
    larger_models: list[str] = Field(
        default_factory=list,
        description="text classification with a timeout: larger encoders, smallest first; the "
        "largest whose default run the timeout holds (whole, or with its lowest layers frozen) "
        "is tuned instead of model",
    )
    weights: Path | None = Field(None, description="local weights file (image backbones)")
    gguf_file: str | None = Field(None, description="GGUF file name inside the model folder/repo")
    train: Path
    validation: Path | None = None
    test: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    image_column: str = "image"

    name: str = "study"
    runs_dir: Path = Field(
        Path("runs"), validate_default=True, description="default: runs in the current folder"
    )
    storage: str | None = Field(None, description="Optuna storage URL; default runs/NAME/study.db")
    heartbeat_seconds: int = Field(
        30, ge=1, description="a trial whose worker is silent for twice this long is retried"
    )
    trials: int | None = 20
    timeout: float | None = Field(None, description="wall-clock budget of the whole study, seconds")

    metric: str | None = Field(
        None,
        description="one of the task's: "
        + "; ".join(f"{k.name}: {', '.join(k.metrics)}" for k in KINDS.values())
        + " (the first is the default)",
    )
    patience: int = Field(2, ge=1, description="epochs without improvement before stopping")
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="balanced: each class's loss weighted by train rows / (classes x its rows), "
        "so rare classes (defects) count as much as common ones",
    )
    max_length: int | None = Field(
        None, ge=8, le=131072, description="tokens; default 128 (causal-lm: context, <= 512)"
    )
    image_size: int = Field(224, ge=32, le=1024)
    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    max_dropped_fraction: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 0
    trial_seed: int | None = Field(
        None, description="seed of trial 0 (trial N gets trial_seed + N); default: seed"
    )
    fresh: bool = Field(
        False, exclude=True, description="discard the study's trials and best model, start anew"
    )
    device: str = "auto"
    precision: str = Field(
        "auto",
        description="what matrix products compute in: " + ", ".join(PRECISIONS) + " (auto: "
        "bfloat16 on CUDA, and for text and language models on a CPU that computes it natively "
        "(AMX or AVX-512 BF16), where they train faster (bench/README.md); else float32)",
    )
    smoke: bool = True
    defaults_first: bool = True
    sampler: str = Field("tpe", description="how trials are proposed: " + ", ".join(SAMPLER_NAMES))
    pruner: str = Field("hyperband", description="how weak trials stop: " + ", ".join(PRUNER_NAMES))
    selector: str = Field(
        "keep-defaults",
        description="how the final model is chosen: "
        + ", ".join(SELECTOR_NAMES)
        + " (keep-defaults: the recommended recipe unless a trial beats it on validation by more "
        "than one standard error, widened for the trials the lead was the best of)",
    )
    final_model: str | None = Field(
        None,
        description="what the study hands over: "
        + ", ".join(FINAL_NAMES)
        + "; default: the task's own (soup for text classification, refit for images, kept for "
        "language models). soup: the recommended recipe runs at up to five seeds, as the budget "
        "allows, and their weights are averaged into one model, kept unless the selector's "
        "model leads it on validation by more than the selector's margin; refit: the selector's "
        "recipe trained once more on train + validation for its whole schedule; kept: the "
        "selector's model",
    )
    space: dict[str, Any] = Field(default_factory=dict)
    quiet: bool = False

    backend: Literal["optuna", "ray"] = Field("optuna", description="where trials run")
    ray_address: str | None = Field(None, description="Ray cluster address; default: local")
    cpus_per_trial: float = Field(1.0, gt=0, description="Ray backend: CPUs each trial holds")
    gpus_per_trial: float = Field(0.0, ge=0, description="Ray backend: GPUs (or a fraction)")

    @field_validator("task", "metric", "sampler", "pruner", "selector", "final_model")
    @classmethod
    def _registered(cls, value: str | None, info) -> str | None:
        if value is None and info.field_name in ("metric", "final_model"):
            return value
        known = {
            "task": tuple(KINDS),
            "metric": METRICS,
            "sampler": SAMPLER_NAMES,
            "pruner": PRUNER_NAMES,
            "selector": SELECTOR_NAMES,
            "final_model": FINAL_NAMES,
        }[info.field_name]
        if value not in known:
            raise ValueError(f"must be one of {', '.join(known)}")
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value  # a Path to a model folder

    @field_validator("larger_models", mode="before")
    @classmethod
    def _larger_models(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            value = [value]
        if isinstance(value, list | tuple):
            return [str(v) if isinstance(v, Path) else v for v in value]
        return value

    @field_validator("train", "validation", "test", "weights", "runs_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Resolved once, against the current directory (a YAML file's paths were already made
        # relative to its folder): every backend and worker then sees the same files.
        return None if value is None else value.expanduser().absolute()

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return parse_duration(value)

    @field_validator("trials")
    @classmethod
    def _trials(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1 (or empty for no limit). Got {value} instead")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"must be auto, cpu, cuda, cuda:N or mps. Got {value!r} instead")
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"must be one of {', '.join(PRECISIONS)}. Got {value!r} instead")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(
                f"must be letters, digits, '.', '_' or '-' (it names a folder). Got {value!r}"
            )
        return value

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, Any]) -> dict[str, Any]:
        for knob, spec in value.items():
            if knob not in KNOBS:
                raise ValueError(f"unknown knob {knob!r}; the knobs are: {', '.join(KNOBS)}")
            check_knob_spec(knob, spec)
        return value

    @model_validator(mode="after")
    def _budget(self) -> Experiment:
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be positive. Got {self.timeout} seconds instead")
        if self.trials is None and self.timeout is None:
            raise ValueError("give a budget: trials, timeout, or both")
        kind = kind_of(self.task)
        if self.metric is None:
            self.metric = kind.metrics[0]
        if self.metric not in kind.metrics:
            raise ValueError(
                f"metric {self.metric!r} is not one of {self.task}'s: {', '.join(kind.metrics)}"
            )
        if self.max_length is None and not kind.generates:  # a generator: from its context
            self.max_length = 128
            self._max_length_given = False  # a default: a model with fewer positions lowers it
        for knob in self.space:
            if knob not in kind.knobs:
                owners = ", ".join(k.name for k in KINDS.values() if knob in k.knobs)
                raise ValueError(f"knob {knob!r} is for {owners} only; {self.task} has no adapters")
        if self.final_model is not None and self.final_model not in kind.finals:
            raise ValueError(
                f"final_model {self.final_model!r} is not one of {self.task}'s: "
                f"{', '.join(kind.finals)} (each measured to help that task; the first is its "
                "default): remove it, or give one of those"
            )
        if self.larger_models:
            self._check_larger_models()
        if self.gguf_file is not None and not kind.generates:
            raise ValueError("gguf_file is for causal-lm models only")
        if self.class_weights != "none" and kind.generates:
            raise ValueError(
                f"class_weights is for classification; {self.task} trains on tokens: remove it"
            )
        return self

    def _check_larger_models(self) -> None:
        if self.task != "text-classification":
            raise ValueError(
                f"larger_models is for text-classification (measured there); {self.task}: "
                "give the one model to tune"
            )
        if self.timeout is None:
            raise ValueError(
                "larger_models needs a timeout: the time budget decides which model it holds "
                "(e.g. --timeout 2h)"
            )
        seen = {self.model}
        for model in self.larger_models:
            if not model.strip():
                raise ValueError("larger_models: an empty model name; remove it")
            if model in seen:
                raise ValueError(f"larger_models: {model!r} is given twice (or is model itself)")
            seen.add(model)

    def seed_of(self, number: int) -> int:
        """The seed of trial `number` (best.yaml sets trial_seed so its trial 0 is the best)."""
        return (self.seed if self.trial_seed is None else self.trial_seed) + number

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    @property
    def direction(self) -> str:
        return direction_of(self.metric)


def _study_outputs(folder: Path) -> Path | None:
    """The study output `folder` is part of (a best/ model, a checkpoints/ folder or one of its
    models), or None. Such folders are deleted when their study finds a better model or starts
    afresh."""
    model_files = ("trial.json", "labels.json", "hypertweaks.json")
    if (folder / "best.yaml").is_file() and any((folder / m).is_file() for m in model_files):
        return folder  # a saved model (best/ or checkpoints/trial-N), wherever it was copied
    study = folder.parent
    markers = ("study.db", "results.json", ".best.lock")
    if folder.name in ("best", "checkpoints") and any((study / m).exists() for m in markers):
        return folder
    return None


def check_run_dir_place(exp: Experiment) -> None:
    """A study's folder must not lie inside another study's best model or checkpoints: that
    study deletes them (a better trial, --fresh) and this one with them."""
    run_dir = exp.run_dir
    for path in (run_dir, run_dir.resolve()):
        for folder in (path, *path.parents):
            inside = _study_outputs(folder)
            if inside is not None:
                hint = (
                    " (relative paths in an experiment file are relative to its folder)"
                    if "runs_dir" in exp._relative_in_file
                    else ""
                )
                raise ConfigError(
                    f"runs folder: study {exp.name!r} would be written to {str(run_dir)!r}, "
                    f"inside {str(folder)!r}, another study's saved model or checkpoints, which "
                    f"that study replaces or deletes{hint}; pass --runs-dir (runs_dir=... in "
                    "Python) with a folder outside it, e.g. --runs-dir runs"
                )


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "experiment"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; check its spelling (see `hypertweaks tune --help`)"
        elif item["type"] == "missing":
            message = "is required"
        given = item.get("input")
        shown = (
            ""
            if item["type"] in ("missing", "extra_forbidden") or isinstance(given, dict)
            else (f" (got {given!r})")
        )
        lines.append(f"  {field}: {message}{shown}")
    return "invalid experiment:\n" + "\n".join(lines)


class _Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 numbers: 1e-3 is a float (YAML 1.1 reads it as text) and 1:30 is
    text (YAML 1.1 reads it as 90, a base-60 number)."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$"
        r"|^\.(nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)
_Loader.add_constructor(_INT, lambda loader, node: int(loader.construct_scalar(node), 10))


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """A key given twice is an error (YAML loaders silently keep the last)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{key!r} is given twice (first on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

PATH_FIELDS = ("train", "validation", "test", "weights", "runs_dir")


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in an experiment file; syntax errors name the line and column."""
    if not path.exists():
        raise ConfigError(f"experiment file {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"experiment file {str(path)!r} is a folder; give a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}); save the experiment as UTF-8 YAML"
        ) from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        loaded = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(
            f"{where}: not valid YAML ({problem}); write one 'field: value' per line, e.g. "
            "'model: ./models/minilm', and quote values that hold ': ' or start with '{' or '['"
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of fields, e.g. 'model: ...'")
    return loaded


def _model_relative_to(model: Any, folder: Path) -> Any:
    """A local model folder given relative to `folder`, made absolute; a hub id or name as is."""
    if isinstance(model, str) and not Path(model).expanduser().is_absolute():
        if (folder / model).exists():
            return str((folder / model).absolute())
    return model


def _relative_to(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A YAML file's relative paths are relative to the file's folder, not to where it runs."""
    data = dict(data)
    for key in PATH_FIELDS:
        value = data.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[key] = str(folder / value)
    if "model" in data:
        data["model"] = _model_relative_to(data["model"], folder)
    if isinstance(data.get("larger_models"), list):
        data["larger_models"] = [_model_relative_to(m, folder) for m in data["larger_models"]]
    storage = data.get("storage")
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        database = storage.removeprefix("sqlite:///")
        if database and not database.startswith("/"):
            data["storage"] = f"sqlite:///{(folder / database).absolute()}"
    return data


def load_experiment(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Experiment:
    """Read a YAML experiment (safe loader) and apply overrides (e.g. command-line flags).
    Relative paths in the file are relative to its folder; in flags, to the current one."""
    data: dict[str, Any] = {}
    relative: set[str] = set()
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path)
        data.update(_relative_to(loaded, path.absolute().parent))
        relative = {key for key in PATH_FIELDS if data.get(key) != loaded.get(key)}
    flags = {key: value for key, value in (overrides or {}).items() if value is not None}
    data.update(_relative_to(flags, Path.cwd()))
    exp = make_experiment(data)
    exp._relative_in_file = relative - set(flags)
    return exp


def make_experiment(data: dict[str, Any] | Experiment) -> Experiment:
    if isinstance(data, Experiment):
        return data
    try:
        return Experiment(**data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error)) from None
