import pytest

from hypertweaks.config import ConfigError, load_experiment, make_experiment, parse_duration


def base(**changes):
    return {"model": "m", "train": "train.csv", **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"space": {"learning_rate": -3}}, r"learning_rate.*\(0.0, 1.0\].*Got -3"),
        ({"space": {"learning_rate": {"low": 0, "high": 1e-3, "log": True}}}, "learning_rate"),
        ({"space": {"dropout": 1.0}}, r"dropout.*\[0.0, 1.0\).*Got 1.0"),
        ({"space": {"dropout": {"low": 0.3, "high": 0.1}}}, "low 0.3 is above high 0.1"),
        ({"space": {"schedule": ["linear", "step"]}}, "schedule.*one of"),
        ({"space": {"batch_size": 0}}, "batch_size"),
        ({"space": {"learn_rate": 1e-3}}, "unknown knob 'learn_rate'"),
        ({"trials": 0}, "trials: must be at least 1"),
        ({"timeout": "0s"}, "timeout must be positive"),
        ({"trials": None}, "give a budget"),
        ({"epochz": 3}, "epochz: unknown field"),
        ({"device": "gpu"}, "device.*auto, cpu, cuda"),
        ({"precision": "fp16"}, "precision: must be one of auto, float32, bfloat16.*'fp16'"),
        ({"name": "../x"}, "name"),
        ({"metric": "roc_auc"}, "not one of text-classification.s: accuracy"),
        ({"metric": "exact_match"}, "not one of text-classification"),
        ({"space": {"lora_r": 8}}, "lora_r.*causal-lm only"),
    ],
)
def test_invalid_experiment_is_rejected_with_the_field_named(changes, message):
    # every error names the field and the offending value, before any compute
    with pytest.raises(ConfigError, match=message):
        make_experiment(base(**changes))


def test_missing_required_field_is_named():
    with pytest.raises(ConfigError, match="model: is required"):
        make_experiment({"train": "x.csv"})


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("1.5h", 5400), (45, 45)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_flags_override_yaml(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model: a\ntrain: t.csv\ntrials: 5\nspace:\n  epochs: 3\n")
    exp = load_experiment(path, {"trials": 9, "model": None})
    assert (exp.trials, exp.model, exp.space) == (9, "a", {"epochs": 3})


def test_yaml_is_read_safely(tmp_path):
    # a YAML tag that would construct a Python object is refused, never executed
    path = tmp_path / "exp.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo hacked']\ntrain: t.csv\n")
    with pytest.raises(Exception, match="python/object"):
        load_experiment(path)


def test_missing_experiment_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment("nope.yaml")
