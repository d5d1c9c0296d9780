"""The GPU check: the CUDA paths, bf16 autocast, and a study whose peak GPU memory does not grow
from trial to trial. Skipped without CUDA; run it on a GPU machine with

    pytest -q tests/test_gpu.py        # about a minute on one GPU

Nothing here has run on a GPU yet (no GPU was lent to this project so far): see the README."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_picks_the_gpu_and_cuda_n_is_checked():
    from hypertweaks.checks import check_device
    from hypertweaks.config import ConfigError
    from hypertweaks.train import resolve_device

    assert resolve_device("auto").type == "cuda"
    check_device("cuda:0")
    with pytest.raises(ConfigError, match="this machine has"):
        check_device(f"cuda:{torch.cuda.device_count()}")


def test_bf16_autocast_trains_and_its_logits_are_bf16(task):
    from conftest import FAST_RECIPE

    from hypertweaks.train import autocast, fit

    device = torch.device("cuda")
    model, layers = task.build(FAST_RECIPE)
    result = fit(
        task,
        model,
        layers,
        FAST_RECIPE,
        task.dataset(task.splits.train, True),
        task.dataset(task.splits.validation, False),
        device=device,
    )
    assert next(model.parameters()).device.type == "cuda"
    numbers = [v for row in result.curve for v in row.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers)
    inputs, _ = task.dataset(task.splits.validation, False).collate([0, 1])
    with autocast(device):
        logits = task.forward(model, {k: v.to(device) for k, v in inputs.items()})
    assert logits.dtype == torch.bfloat16


def test_peak_gpu_memory_does_not_grow_from_trial_to_trial(text_experiment):
    # every trial frees its model, optimizer and caches: trial 5 peaks no higher than trial 2
    import hypertweaks.search as search_module
    from hypertweaks.backends.embedded import EmbeddedBackend

    peaks = []
    original = EmbeddedBackend._after_trial

    def record(self, study, trial):
        peaks.append(torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
        original(self, study, trial)

    EmbeddedBackend._after_trial = record
    try:
        search_module.tune(
            {**text_experiment, "trials": 5, "device": "cuda", "pruner": "none",
             "space": {"epochs": 1, "batch_size": 8}}
        )  # fmt: skip
    finally:
        EmbeddedBackend._after_trial = original
    assert len(peaks) == 5
    assert max(peaks[1:]) <= peaks[1] * 1.05 + (1 << 20), peaks
    assert torch.cuda.memory_allocated() < (64 << 20)  # nothing left behind after the study
