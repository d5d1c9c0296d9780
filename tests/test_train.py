import math

import pytest
import torch
from conftest import FAST_RECIPE

from hypertweaks.space import Recipe
from hypertweaks.tasks.base import TaskBase
from hypertweaks.train import Diverged, fit, make_optimizer

FAST = Recipe(**{**FAST_RECIPE.as_dict(), "epochs": 6})


def run(task, recipe=FAST, **kwargs):
    model, layers = task.build(recipe)
    result = fit(
        task,
        model,
        layers,
        recipe,
        task.dataset(task.splits.train, True),
        task.dataset(task.splits.validation, False),
        **kwargs,
    )
    return model, result


def test_learns_above_chance_and_reports_every_epoch(task):
    seen = []
    _, result = run(task, on_epoch=lambda report: seen.append(report.epoch) and False, patience=6)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert result.best_value > 0.5  # three balanced classes: chance is 1/3
    assert result.curve[-1]["examples"] == 6 * len(task.splits.train)
    assert {"loss", "accuracy", "macro_f1", "train_loss"} <= set(result.curve[0])


def test_the_best_epochs_weights_are_returned(task):
    model, result = run(task, patience=6)
    from hypertweaks.train import evaluate

    again = evaluate(task, model, task.dataset(task.splits.validation, False), "cpu")
    assert again["accuracy"] == pytest.approx(result.best_value)
    assert result.best_value == max(row["accuracy"] for row in result.curve)


def test_early_stopping_after_patience_epochs_without_improvement(task):
    frozen = Recipe(**{**FAST.as_dict(), "learning_rate": 1e-12, "epochs": 10})
    _, result = run(task, frozen, patience=2)
    assert result.stopped == "early_stopped" and len(result.curve) == 3


def test_the_callback_can_stop_training(task):
    _, result = run(task, on_epoch=lambda report: report.epoch == 2)
    assert result.stopped == "pruned" and len(result.curve) == 2


def test_stop_after_keeps_the_recipe_s_schedule(task):
    # the first two epochs of six, as the six-epoch run made them: the same updates, not a
    # two-epoch schedule decayed to zero
    rates = []
    original = torch.optim.lr_scheduler.LambdaLR.step

    def step(scheduler, *args, **kwargs):
        original(scheduler, *args, **kwargs)
        rates.append(scheduler.get_last_lr()[0])

    linear = Recipe(**{**FAST.as_dict(), "schedule": "linear", "warmup_ratio": 0.0})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.lr_scheduler.LambdaLR, "step", step)
        torch.manual_seed(0)  # the same fresh head in both runs
        _, stopped = run(task, linear, patience=6, stop_after=2)
    torch.manual_seed(0)
    _, whole = run(task, linear, patience=6)
    assert stopped.stopped == "stop_after" and len(stopped.curve) == 2
    assert rates[-1] == pytest.approx(linear.learning_rate * 4 / 6)
    scores = [[row[k] for k in ("train_loss", "accuracy")] for row in whole.curve[:2]]
    assert [[row[k] for k in ("train_loss", "accuracy")] for row in stopped.curve] == scores


def test_without_validation_a_run_keeps_its_last_epoch(task):
    # a refit: its validation rows trained it, so nothing is scored and its last weights stay
    torch.manual_seed(0)
    model, layers = task.build(FAST)
    data = task.dataset(task.splits.train, True)
    result = fit(task, model, layers, FAST, data, None, stop_after=1)
    torch.manual_seed(0)
    unscored, _ = run(task, FAST, stop_after=1)  # the same run, scored: the same weights
    assert result.stopped == "stop_after" and result.best_epoch == 1
    assert list(result.curve[0]) == ["epoch", "train_loss"] and not result.best_metrics
    for key, value in unscored.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_diverging_recipe_stops_at_once(task):
    model, layers = task.build(FAST)
    steps = []

    class NanAfterTwoSteps(TaskBase):
        metrics = task.metrics

        def forward(self, model, inputs):
            steps.append(1)
            logits = task.forward(model, inputs)
            return logits * math.nan if len(steps) > 2 else logits

    with pytest.raises(Diverged, match="loss became nan at epoch 1, step 3"):
        fit(
            NanAfterTwoSteps(task.experiment, task.cache_dir),
            model,
            layers,
            FAST,
            task.dataset(task.splits.train, True),
            task.dataset(task.splits.validation, False),
        )


def test_no_weight_decay_on_biases_and_layernorm(task):
    model, _ = task.build(FAST)
    groups = make_optimizer(model, FAST).param_groups
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in no_decay) == ("bias" in name or "LayerNorm" in name), name
    # the fused kernel: 1.55x the examples/s of the per-tensor loop on CPU (bench speed)
    assert all(g["fused"] for g in groups)


def test_frozen_layers_do_not_change(task):
    recipe = Recipe(**{**FAST.as_dict(), "freeze_layers": 1, "epochs": 1})
    model, layers = task.build(recipe)

    def snapshot(params):
        return [p.detach().clone() for p in params]

    def same(before, params):
        return all(torch.equal(a, b) for a, b in zip(before, params, strict=True))

    frozen, embeddings = snapshot(layers.blocks[0].parameters()), snapshot(layers.bottom)
    trained = snapshot(layers.blocks[1].parameters())
    fit(
        task,
        model,
        layers,
        recipe,
        task.dataset(task.splits.train, True),
        task.dataset(task.splits.validation, False),
    )
    assert same(frozen, layers.blocks[0].parameters()) and same(embeddings, layers.bottom)
    assert not same(trained, layers.blocks[1].parameters())


def test_tokenization_is_cached_per_study(task, tmp_path):
    task.dataset(task.splits.train, True)
    cached = list((tmp_path / "cache").glob("tokens-*.pt"))
    assert len(cached) == 1
    other = type(task)(task.experiment, tmp_path / "cache")
    other.prepare()
    other.tokenizer = None  # a second study reads the cache: calling the tokenizer would fail
    assert len(other.dataset(other.splits.train, True)) == len(task.splits.train)


@pytest.mark.parametrize(
    ("precision", "native", "expected"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("float32", True, False),
        ("bfloat16", False, True),
    ],
)
def test_text_computes_in_bfloat16_on_a_cpu_that_does_it_natively(
    task, monkeypatch, precision, native, expected
):
    from hypertweaks import train

    monkeypatch.setattr(train, "native_cpu_bfloat16", lambda: native)
    task.experiment.precision = precision
    cpu = torch.device("cpu")
    assert train.computes_bfloat16(task, cpu) is expected
    # and training then runs its matrix products in it, the weights staying float32
    seen = []
    model, layers = task.build(FAST)
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    fit(task, model, layers, FAST, task.dataset(task.splits.train, True),
        task.dataset(task.splits.validation, False))  # fmt: skip
    assert seen and set(seen) == {torch.bfloat16 if expected else torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_an_image_task_stays_float32_on_a_cpu_unless_asked(monkeypatch):
    from hypertweaks import train
    from hypertweaks.tasks.image import ImageClassification

    monkeypatch.setattr(train, "native_cpu_bfloat16", lambda: True)
    # a small CNN gains 1.1x at most from it: auto leaves images in float32 on a CPU
    assert not ImageClassification.cpu_bfloat16
    with train.autocast(torch.device("cpu"), "auto", ImageClassification.cpu_bfloat16):
        assert not torch.is_autocast_enabled("cpu")
    with train.autocast(torch.device("cpu"), "bfloat16", ImageClassification.cpu_bfloat16):
        assert torch.is_autocast_enabled("cpu")
