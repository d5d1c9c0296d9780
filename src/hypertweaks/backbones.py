"""Pretrained image backbones: timm by name (weights from the hub or a local file), or a Hugging
Face image-classification model from a hub id or folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hypertweaks.models import (
    LayerStack,
    ModelError,
    layer_stack,
    load_hf_config,
    looks_like_path,
    quiet_transformers,
    with_dropout,
)


def is_hf_model(model: str) -> bool:
    """A local folder with a config.json, or a hub id (owner/name); anything else is a timm name."""
    path = Path(model).expanduser()
    return (path / "config.json").is_file() or ("/" in model and not path.exists())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, or torch.load with weights_only (never unpickles code)."""
    if not path.is_file():
        raise ModelError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a weights file, or holding code to unpickle
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "Weights only load failed" in first:
            first = "it holds more than tensors, which are never unpickled"
        raise ModelError(
            f"weights file {str(path)!r} cannot be read ({first}); give a .safetensors file or a "
            "torch state dict saved with torch.save(model.state_dict(), path)"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"weights file {str(path)!r} holds no state dict")
    return state


def map_state_dict(source: dict[str, torch.Tensor], target: nn.Module, path: Path) -> dict:
    """Rename `source` to `target`'s key names. Same names load as they are; otherwise the keys
    must match one to one in order with the same shapes (e.g. lukemelas-style EfficientNet names
    onto timm's), or the load fails with the first difference."""
    wanted = target.state_dict()
    if set(source) == set(wanted):
        return source
    if len(source) != len(wanted):
        raise ModelError(
            f"weights {str(path)!r} have {len(source)} tensors but {type(target).__name__} has "
            f"{len(wanted)}: they are for another architecture"
        )
    for (src_key, src), (dst_key, dst) in zip(source.items(), wanted.items(), strict=True):
        if tuple(src.shape) != tuple(dst.shape):
            raise ModelError(
                f"weights {str(path)!r} do not fit the model: {src_key} {tuple(src.shape)} would "
                f"load into {dst_key} {tuple(dst.shape)}"
            )
    return dict(zip(wanted, source.values(), strict=True))


def require_timm_model(name: str):
    import timm

    if not timm.is_model(name):
        similar = timm.list_models(f"*{name}*")[:8]
        hint = f"; similar: {', '.join(similar)}" if similar else ""
        raise ModelError(
            f"unknown model {name!r}: not a timm architecture nor a model folder{hint}"
        )
    return timm


def create_timm(name: str, num_classes: int, dropout: float, weights: Path | None) -> nn.Module:
    timm = require_timm_model(name)
    # head dropout, and stochastic depth (milder) where the architecture has it
    kwargs: dict[str, Any] = {"drop_rate": dropout, "drop_path_rate": dropout / 2}
    if weights is None:
        try:
            return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
        except Exception as error:  # offline, or no pretrained weights for this name
            raise ModelError(
                f"cannot fetch pretrained weights for {name!r} ({str(error).splitlines()[0]}); "
                "download them and pass --weights FILE"
            ) from None
    model = timm.create_model(name, pretrained=False, **kwargs)  # the original head, to load into
    model.load_state_dict(map_state_dict(read_state_dict(weights), model, weights))
    model.reset_classifier(num_classes)
    return model


class ParamGroup(nn.Module):
    """Some of a model's parameters seen as one freezable layer (a stage timm groups by name)."""

    def __init__(self, params: list[nn.Parameter]):
        super().__init__()
        self.group = nn.ParameterList(params)


def timm_stages(model: nn.Module) -> LayerStack | None:
    """The model's real stages, from timm's own coarse parameter grouping (stem, stages, head):
    ResNet layer1-4, ConvNeXt stages, EfficientNet blocks, ViT blocks. What follows the last stage
    and is not the classifier (conv_head, final norm) is the neck, the last block."""
    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        return None
    try:
        from timm.models import group_parameters

        groups = group_parameters(model, matcher(coarse=True))
    except Exception:  # an architecture whose matcher timm cannot apply: the generic split
        return None
    named = dict(model.named_parameters())
    ordered = [[(n, named[n]) for n in names] for _, names in sorted(groups.items())]
    classifier = {id(p) for p in model.get_classifier().parameters()}
    if len(ordered) < 3 or not all(id(p) in classifier for _, p in ordered[-1][-1:]):
        return None
    stem, stages, head = ordered[0], ordered[1:-1], ordered[-1]
    last_module = stages[-1][0][0].split(".")[0]
    neck = [p for n, p in stages[-1] if n.split(".")[0] != last_module]
    neck += [p for _, p in head if id(p) not in classifier]
    stages[-1] = [(n, p) for n, p in stages[-1] if n.split(".")[0] == last_module]
    blocks = [ParamGroup([p for _, p in stage]) for stage in stages]
    if neck:
        blocks.append(ParamGroup(neck))
    top = [p for _, p in head if id(p) in classifier]
    return LayerStack([p for _, p in stem], blocks, top)


def timm_layer_stack(model: nn.Module) -> LayerStack:
    """stem -> stages ... -> neck (the layers after the stages) as the last block -> classifier;
    freezing every block leaves a linear probe on the pooled features."""
    stages = timm_stages(model)
    if stages is not None:
        return stages
    stack = layer_stack(model, body=model)
    classifier = {id(p) for p in model.get_classifier().parameters()}
    neck = [p for p in stack.top if id(p) not in classifier]
    top = [p for p in stack.top if id(p) in classifier]
    blocks = list(stack.blocks)
    if neck:
        neck_ids = {id(p) for p in neck}
        neck_modules = [
            m
            for m in model.children()
            if any(id(p) in neck_ids for p in m.parameters())
            and not any(id(p) in classifier for p in m.parameters())
        ]
        blocks.append(nn.ModuleList(neck_modules))
    return LayerStack(stack.bottom, blocks, top)


def load_image_classifier(
    model: str,
    num_classes: int,
    dropout: float,
    weights: Path | None = None,
    id2label: dict[int, str] | None = None,
) -> tuple[nn.Module, LayerStack]:
    if is_hf_model(model):
        from transformers import AutoModelForImageClassification

        quiet_transformers()
        config = load_hf_config(model)
        source = str(Path(model).expanduser()) if looks_like_path(model) else model
        net = AutoModelForImageClassification.from_pretrained(
            source,
            num_labels=num_classes,
            ignore_mismatched_sizes=True,
            id2label=id2label,
            label2id={v: k for k, v in (id2label or {}).items()},
            **with_dropout(config, dropout),
        )
        return net, layer_stack(net)
    net = create_timm(model, num_classes, dropout, weights)
    return net, timm_layer_stack(net)


def normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the backbone was pretrained with."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "mean" in cfg:
        return tuple(cfg["mean"]), tuple(cfg["std"])
    return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet


def pretrained_dropout(model: str) -> float:
    """The dropout the architecture is built with by default (timm's drop_rate, or the HF
    config's dropout)."""
    if is_hf_model(model):
        from hypertweaks.models import default_dropout

        return default_dropout(load_hf_config(model))
    timm = require_timm_model(model)
    return float(getattr(timm.create_model(model, pretrained=False), "drop_rate", 0.0))
