"""Load a pretrained model, set its dropout, and freeze / gradually unfreeze its layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

# What to do about a saved model folder whose files are missing or cannot be read.
RESAVE = "re-run `hypertweaks tune` to save the model again, or restore the file"


def error_reason(error: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def unreadable(path, error: BaseException) -> ModelError:
    """A saved model's file that cannot be read, with why and what to do."""
    return ModelError(f"{path} cannot be read ({error_reason(error)}); {RESAVE}")


class ModelError(ValueError):
    """The model cannot be loaded or used as asked; the message says why and what to do."""


def looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).exists() or model.count("/") > 1


def load_hf_config(model: str, **overrides: Any):
    """The model's config from a local folder or a hub id, with a clear error when neither works."""
    from transformers import AutoConfig

    if looks_like_path(model) and not Path(model).expanduser().is_dir():
        raise ModelError(f"model folder {model!r} does not exist")
    try:
        return AutoConfig.from_pretrained(
            str(Path(model).expanduser()) if looks_like_path(model) else model, **overrides
        )
    except (OSError, ValueError) as error:
        raise ModelError(
            f"cannot load model {model!r}: it is neither a local model folder nor a hub id that "
            f"could be fetched ({str(error).splitlines()[0]}). Check the name, or download the "
            "model and pass its folder"
        ) from None


def check_max_length(max_length: int | None, config: Any, model: str, given: bool = True) -> int:
    """A text max_length the model's position embeddings can hold: a default above the model's
    limit is lowered to it; a max_length the user gave is refused."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or max_length is None:
        return max_length
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # RoBERTa's positions start after the padding index
    if max_length > limit and not given:
        return limit
    if max_length > limit:
        raise ModelError(
            f"max_length {max_length} is longer than model {model!r} reads ({limit} tokens, "
            f"max_position_embeddings); set max_length to at most {limit}"
        )
    return max_length


def dropout_fields(config: Any) -> list[str]:
    """The config's dropout probabilities (hidden_dropout_prob, attention_dropout,
    seq_classif_dropout, ...), found by name so every family is covered without a table."""
    return [
        key
        for key, value in vars(config).items()
        if "dropout" in key and isinstance(value, float) and not isinstance(value, bool)
    ]


def default_dropout(config: Any) -> float:
    """The dropout the model was pretrained with."""
    for key in ("hidden_dropout_prob", "dropout", "hidden_dropout", "dropout_rate"):
        value = getattr(config, key, None)
        if isinstance(value, float):
            return value
    fields = dropout_fields(config)
    return float(getattr(config, fields[0])) if fields else 0.1


def with_dropout(config: Any, dropout: float) -> dict[str, float]:
    """Overrides that set every dropout of the config, including an unset classifier dropout."""
    overrides = {key: dropout for key in dropout_fields(config)}
    if hasattr(config, "classifier_dropout"):
        overrides["classifier_dropout"] = dropout
    return overrides


@dataclass
class LayerStack:
    """A model seen as bottom (embeddings / stem) -> blocks (bottom to top) -> top (head)."""

    bottom: list[nn.Parameter]
    blocks: list[nn.Module]
    top: list[nn.Parameter]
    # When set, only these parameters (by id) ever train, e.g. the LoRA adapters inside the blocks.
    only: set[int] | None = field(default=None)
    # The modules that hold the bottom (embeddings, stem): they run as in evaluation while frozen.
    bottom_modules: list[nn.Module] = field(default_factory=list)

    def groups_top_down(self, freeze_layers: int) -> list[list[nn.Parameter]]:
        """Trainable parameter groups, top first; the bottom and the lowest `freeze_layers`
        blocks are never trained."""
        groups = [self.top] + [list(b.parameters()) for b in reversed(self.blocks[freeze_layers:])]
        if freeze_layers == 0:
            groups.append(self.bottom)
        if self.only is not None:  # a group counts only if something in it may train
            groups = [[p for p in g if id(p) in self.only] for g in groups]
        return [g for g in groups if g]

    def set_trainable(self, freeze_layers: int, gradual_unfreeze: bool, epoch: int) -> int:
        """Freeze per recipe at this (0-based) epoch; gradual unfreezing (ULMFiT) trains the top
        group in epoch 0 and one more group down each epoch. Returns the trainable group count."""
        groups = self.groups_top_down(freeze_layers)
        if gradual_unfreeze:
            groups = groups[: epoch + 1]
        for param in self.bottom + self.top:
            param.requires_grad_(False)
        for block in self.blocks:
            block.requires_grad_(False)
        for group in groups:
            for param in group:
                param.requires_grad_(True)
        for module in self.frozen_modules(freeze_layers):
            module.eval()
        return len(groups)

    def frozen_modules(self, freeze_layers: int) -> list[nn.Module]:
        """The bottom and the lowest `freeze_layers` blocks, which never train in this recipe.
        They run as in evaluation (no dropout, batch-norm statistics kept), so that what they
        compute is the pretrained model's, the same at every epoch: it can be computed once."""
        if freeze_layers <= 0:
            return []
        return [*self.bottom_modules, *self.blocks[:freeze_layers]]


def freeze_norm_statistics(model: nn.Module) -> None:
    """Frozen batch-norm layers keep their pretrained running statistics (eval mode)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()


def largest_block_list(module: nn.Module) -> nn.Module | None:
    """The longest ModuleList/Sequential whose children share one class: the transformer layers
    (or backbone stages), whatever the family calls them."""
    best, best_key = None, (1, 0)
    for candidate in module.modules():
        if not isinstance(candidate, nn.ModuleList | nn.Sequential):
            continue
        children = list(candidate.children())
        if len(children) < 2 or len({type(c) for c in children}) != 1:
            continue
        key = (len(children), sum(p.numel() for p in candidate.parameters()))
        if key > best_key:
            best, best_key = candidate, key
    return best


def layer_stack(model: nn.Module, body: nn.Module | None = None) -> LayerStack:
    """Split a model into bottom / blocks / top. `body` is the pretrained part (HF base_model);
    parameters registered before the blocks in it are the bottom, all the rest is the top."""
    body = body if body is not None else getattr(model, "base_model", model)
    blocks_module = largest_block_list(body)
    if blocks_module is None:
        raise ModelError(f"cannot find the stack of layers in {type(model).__name__} to freeze")
    block_params = {id(p) for p in blocks_module.parameters()}
    bottom: list[nn.Parameter] = []
    seen_blocks = False
    for param in body.parameters():
        if id(param) in block_params:
            seen_blocks = True
        elif not seen_blocks:
            bottom.append(param)
    taken = block_params | {id(p) for p in bottom}
    top = [p for p in model.parameters() if id(p) not in taken]
    in_bottom = {id(p) for p in bottom}
    bottom_modules = [
        child
        for child in body.children()
        if any(True for _ in child.parameters())
        and all(id(p) in in_bottom for p in child.parameters())
    ]
    return LayerStack(bottom, list(blocks_module.children()), top, bottom_modules=bottom_modules)


def quiet_transformers() -> None:
    """transformers prints a load report and progress bars on every load: one per trial."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_text_classifier(
    model: str, num_labels: int, id2label: dict[int, str], dropout: float | None = None
):
    """A pretrained encoder with a fresh sequence-classification head."""
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    source = str(Path(model).expanduser()) if looks_like_path(model) else model
    config = load_hf_config(model)
    overrides = with_dropout(config, dropout) if dropout is not None else {}
    return AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=num_labels,
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        **overrides,
    )
