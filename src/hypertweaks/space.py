"""The tunable knobs: their valid values, default ranges, and how a trial turns them into a recipe.

A knob's spec in the experiment is one of:
  a scalar            -> fixed, never searched          (epochs: 4)
  a list              -> one of these values             (batch_size: [16, 32])
  {low, high, log}    -> a range, log scale if asked
                         (learning_rate: {low: 1e-5, high: 1e-4, log: true})
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

SCHEDULES = ("constant", "linear", "cosine")
ADAPTERS = ("lora", "full")
# Which linear layers get LoRA adapters: the attention projections, or every linear layer of the
# blocks (QLoRA, Dettmers et al. 2023, found the latter needed to match full fine-tuning).
LORA_TARGETS = ("attention", "all-linear")
# freeze_layers may name a share of the model's layers: "all" of them, or the lower "half".
LAYER_WORDS = ("all", "half")


@dataclass(frozen=True)
class Knob:
    kind: str  # "float", "int", "bool" or "choice"
    low: float | None = None  # smallest valid value
    high: float | None = None  # largest valid value
    high_open: bool = False  # high itself is not valid (dropout < 1)
    low_open: bool = False  # low itself is not valid (learning rate > 0)
    choices: tuple = ()
    default: Any = None  # the default search range

    def check(self, name: str, value: Any) -> None:
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"knob {name!r} must be true or false. Got {value!r} instead")
            return
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(
                    f"knob {name!r} must be one of {list(self.choices)}. Got {value!r}"
                )
            return
        if name == "freeze_layers" and value in LAYER_WORDS:
            return
        ok_type = isinstance(value, int) if self.kind == "int" else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            hint = ""
            if isinstance(value, str):
                hint = " (text, not a number: write it unquoted, e.g. 1.0e-3 or 0.001)"
            raise ValueError(
                f"knob {name!r} must be a finite {self.kind}. Got {value!r} instead{hint}"
            )
        below = value <= self.low if self.low_open else value < self.low
        above = self.high is not None and (
            value >= self.high if self.high_open else value > self.high
        )
        if below or above:
            left = "(" if self.low_open else "["
            right = (
                "inf)"
                if self.high is None
                else (f"{self.high})" if self.high_open else f"{self.high}]")
            )
            raise ValueError(
                f"knob {name!r} must be in {left}{self.low}, {right}. Got {value} instead"
            )


KNOBS: dict[str, Knob] = {
    "learning_rate": Knob(
        "float", 0.0, 1.0, low_open=True, default={"low": 1e-5, "high": 2e-4, "log": True}
    ),
    "batch_size": Knob("int", 1, 4096, default=[8, 16, 32]),
    "epochs": Knob("int", 1, 1000, default={"low": 2, "high": 5}),
    "dropout": Knob("float", 0.0, 1.0, high_open=True, default={"low": 0.0, "high": 0.3}),
    "weight_decay": Knob("float", 0.0, 10.0, default={"low": 0.0, "high": 0.1}),
    "schedule": Knob("choice", choices=SCHEDULES, default=list(SCHEDULES)),
    "warmup_ratio": Knob("float", 0.0, 1.0, high_open=True, default={"low": 0.0, "high": 0.2}),
    "freeze_layers": Knob("int", 0, None, default={"low": 0, "high": "all"}),
    "gradual_unfreeze": Knob("bool", default=[False, True]),
    # Causal language models only: full fine-tuning or LoRA adapters, and the adapters' settings.
    "adapter": Knob("choice", choices=ADAPTERS, default="lora"),
    "lora_r": Knob("int", 1, 1024, default=[8, 16, 32, 64]),
    "lora_alpha": Knob(
        "float", 0.0, 4096.0, low_open=True, default={"low": 8, "high": 128, "log": True}
    ),
    "lora_dropout": Knob("float", 0.0, 1.0, high_open=True, default={"low": 0.0, "high": 0.2}),
    "lora_targets": Knob("choice", choices=LORA_TARGETS, default=list(LORA_TARGETS)),
}
CORE_KNOBS = tuple(name for name in KNOBS if name != "adapter" and not name.startswith("lora_"))
LM_KNOBS = tuple(KNOBS)


@dataclass(frozen=True)
class Recipe:
    """One complete fine-tuning recipe: a value for every knob."""

    learning_rate: float
    batch_size: int
    epochs: int
    dropout: float
    weight_decay: float
    schedule: str
    warmup_ratio: float
    freeze_layers: int
    gradual_unfreeze: bool
    adapter: str | None = None  # the rest: causal language models only
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    lora_targets: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}


def check_knob_spec(name: str, spec: Any) -> None:
    """Raise ValueError naming the knob when its spec is not a valid fixed value, list or range."""
    knob = KNOBS[name]
    if isinstance(spec, dict):
        unknown = set(spec) - {"low", "high", "log"}
        if unknown or "low" not in spec or "high" not in spec:
            raise ValueError(f"knob {name!r}: a range needs 'low' and 'high' (and optional 'log')")
        if knob.kind not in ("float", "int"):
            raise ValueError(f"knob {name!r} takes a value or a list, not a range")
        knob.check(name, spec["low"])
        knob.check(name, spec["high"])
        numbers = spec["low"] not in LAYER_WORDS and spec["high"] not in LAYER_WORDS
        if numbers and spec["low"] > spec["high"]:
            raise ValueError(f"knob {name!r}: low {spec['low']} is above high {spec['high']}")
        if spec.get("log") and spec["low"] <= 0:
            raise ValueError(f"knob {name!r}: a log range needs low > 0. Got {spec['low']}")
    elif isinstance(spec, list):
        if not spec:
            raise ValueError(f"knob {name!r}: the list of values is empty")
        for value in spec:
            knob.check(name, value)
    else:
        knob.check(name, spec)


def resolve_space(
    user_space: dict[str, Any], num_layers: int, names: tuple[str, ...] = CORE_KNOBS
) -> dict[str, Any]:
    """Every knob's spec (of the task's knobs `names`): the user's where given, else the
    default; 'all' layers made concrete."""
    space = {name: user_space.get(name, KNOBS[name].default) for name in names}

    def concrete(value: Any) -> Any:
        if value == "all":
            return num_layers
        if value == "half":
            return num_layers // 2
        if isinstance(value, int) and value > num_layers:
            raise ValueError(
                f"knob 'freeze_layers': the model has {num_layers} layers, so at most "
                f"{num_layers} can be frozen. Got {value}"
            )
        return value

    spec = space["freeze_layers"]
    if isinstance(spec, dict):
        low, high = concrete(spec["low"]), concrete(spec["high"])
        if low > high:  # e.g. {low: half, high: 2} on a 6-layer model
            raise ValueError(
                f"knob 'freeze_layers': low {spec['low']!r} is {low} layers on this model, above "
                f"high {spec['high']!r} ({high}); lower 'low' or raise 'high'"
            )
        space["freeze_layers"] = {**spec, "low": low, "high": high}
    elif isinstance(spec, list):
        space["freeze_layers"] = [concrete(v) for v in spec]
    else:
        space["freeze_layers"] = concrete(spec)
    return space


def tunable(space: dict[str, Any]) -> list[str]:
    """The knobs the search varies (the others are fixed)."""
    return [name for name, spec in space.items() if isinstance(spec, dict | list) and _width(spec)]


def _width(spec: dict | list) -> bool:
    if isinstance(spec, list):
        return len(set(spec)) > 1
    return spec["low"] != spec["high"]


def max_epochs(space: dict[str, Any]) -> int:
    spec = space["epochs"]
    if isinstance(spec, dict):
        return int(spec["high"])
    return int(max(spec) if isinstance(spec, list) else spec)


class Suggester(Protocol):  # what an optuna.Trial offers; keeps this module free of optuna
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def suggest(trial: Suggester, space: dict[str, Any]) -> Recipe:
    """Ask the trial for every tunable knob; fixed knobs keep their value."""
    values = {}
    for name, spec in space.items():
        kind = KNOBS[name].kind
        if isinstance(spec, list):
            values[name] = trial.suggest_categorical(name, spec) if len(set(spec)) > 1 else spec[0]
        elif isinstance(spec, dict) and spec["low"] != spec["high"]:
            suggest_range = trial.suggest_int if kind == "int" else trial.suggest_float
            values[name] = suggest_range(name, spec["low"], spec["high"], log=bool(spec.get("log")))
        elif isinstance(spec, dict):
            values[name] = spec["low"]
        else:
            values[name] = spec
    return Recipe(**values)


def fit_into(space: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """The tunable part of a recipe, moved into the space (clipped to ranges, else the first
    choice), so it can be enqueued as a trial."""
    params = {}
    for name in tunable(space):
        spec, value = space[name], recipe[name]
        if isinstance(spec, list):
            params[name] = value if value in spec else spec[0]
        else:
            params[name] = min(max(value, spec["low"]), spec["high"])
    return params
