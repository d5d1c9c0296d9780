"""The experiment schema: one validated object from YAML and/or command-line flags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hypertweaks.objective import direction_of
from hypertweaks.recipes import task_knobs
from hypertweaks.space import KNOBS, check_knob_spec
from hypertweaks.strategies import PRUNERS, SAMPLERS

TASKS = ("text-classification", "image-classification", "causal-lm")
METRICS = ("accuracy", "macro_f1", "loss", "roc_auc", "defect_recall", "perplexity", "exact_match")
_METRICS_BY_TASK = {
    "text-classification": ("accuracy", "macro_f1", "loss"),
    "image-classification": ("accuracy", "macro_f1", "loss", "roc_auc", "defect_recall"),
    "causal-lm": ("loss", "perplexity", "exact_match"),
}
_DEFAULT_METRIC = {"causal-lm": "loss"}


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
        raise ValueError(f"cannot read {value!r} as a duration; use e.g. 90s, 30m, 2h")
    number, unit = match.groups()
    return float(number) * _UNIT_SECONDS[(unit or "s").lower()]


class Experiment(BaseModel):
    """Everything one study needs. Unknown keys are errors, not warnings."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    task: Literal["text-classification", "image-classification", "causal-lm"] = (
        "text-classification"
    )
    model: str = Field(description="Hugging Face hub id, local model folder, or timm name")
    weights: Path | None = Field(None, description="local weights file (image backbones)")
    gguf_file: str | None = Field(None, description="GGUF file name inside the model folder/repo")
    train: Path
    validation: Path | None = None
    test: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    image_column: str = "image"

    name: str = "study"
    runs_dir: Path = Path("runs")
    storage: str | None = Field(None, description="Optuna storage URL; default runs/NAME/study.db")
    heartbeat_seconds: int = Field(
        30, ge=1, description="a trial whose worker is silent for twice this long is retried"
    )
    trials: int | None = 20
    timeout: float | None = Field(None, description="wall-clock budget of the whole study, seconds")

    metric: (
        Literal[
            "accuracy", "macro_f1", "loss", "roc_auc", "defect_recall", "perplexity", "exact_match"
        ]
        | None
    ) = Field(None, description="default: accuracy, or loss for causal-lm")
    patience: int = Field(2, ge=1, description="epochs without improvement before stopping")
    max_length: int | None = Field(
        None, ge=8, le=131072, description="tokens; default 128 (causal-lm: context, <= 512)"
    )
    image_size: int = Field(224, ge=32, le=1024)
    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    max_dropped_fraction: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 0
    device: str = "auto"
    smoke: bool = True
    defaults_first: bool = True
    sampler: str = Field("tpe", description="how trials are proposed: " + ", ".join(SAMPLERS))
    pruner: str = Field("hyperband", description="how weak trials stop: " + ", ".join(PRUNERS))
    space: dict[str, Any] = Field(default_factory=dict)
    quiet: bool = False

    backend: Literal["optuna", "ray"] = Field("optuna", description="where trials run")
    ray_address: str | None = Field(None, description="Ray cluster address; default: local")
    cpus_per_trial: float = Field(1.0, gt=0, description="Ray backend: CPUs each trial holds")
    gpus_per_trial: float = Field(0.0, ge=0, description="Ray backend: GPUs (or a fraction)")

    @field_validator("sampler", "pruner")
    @classmethod
    def _registered(cls, value: str, info) -> str:
        known = SAMPLERS if info.field_name == "sampler" else PRUNERS
        if value not in known:
            raise ValueError(f"must be one of {', '.join(known)}. Got {value!r} instead")
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value  # a Path to a model folder

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
        if self.metric is None:
            self.metric = _DEFAULT_METRIC.get(self.task, "accuracy")
        if self.metric not in _METRICS_BY_TASK[self.task]:
            raise ValueError(
                f"metric {self.metric!r} is not one of {self.task}'s: "
                f"{', '.join(_METRICS_BY_TASK[self.task])}"
            )
        if self.max_length is None and self.task != "causal-lm":  # causal-lm: from its context
            self.max_length = 128
        knobs = task_knobs(self.task)
        for knob in self.space:
            if knob not in knobs:
                raise ValueError(
                    f"knob {knob!r} is for causal-lm only; {self.task} has no adapters"
                )
        if self.gguf_file is not None and self.task != "causal-lm":
            raise ValueError("gguf_file is for causal-lm models only")
        return self

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    @property
    def direction(self) -> str:
        return direction_of(self.metric)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_defaults=False)
        return yaml.safe_dump(data, sort_keys=False)


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


def load_experiment(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Experiment:
    """Read a YAML experiment (safe loader) and apply overrides (e.g. command-line flags)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"experiment file {str(path)!r} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of fields, e.g. 'model: ...'")
        data.update(loaded)
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return make_experiment(data)


def make_experiment(data: dict[str, Any] | Experiment) -> Experiment:
    if isinstance(data, Experiment):
        return data
    try:
        return Experiment(**data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error)) from None
