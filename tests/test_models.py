import pytest
import transformers

from hypertweaks.models import (
    ModelError,
    dropout_fields,
    layer_stack,
    load_hf_config,
    load_text_classifier,
    with_dropout,
)

SMALL = {
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "vocab_size": 64,
    "max_position_embeddings": 32,
}
FAMILIES = {
    "bert": (transformers.BertConfig, {**SMALL, "num_hidden_layers": 3}),
    "roberta": (transformers.RobertaConfig, {**SMALL, "num_hidden_layers": 3}),
    "electra": (
        transformers.ElectraConfig,
        {**SMALL, "num_hidden_layers": 3, "embedding_size": 16},
    ),
    "deberta-v2": (transformers.DebertaV2Config, {**SMALL, "num_hidden_layers": 3}),
    "distilbert": (
        transformers.DistilBertConfig,
        {
            "dim": 16,
            "n_heads": 2,
            "hidden_dim": 32,
            "n_layers": 3,
            "vocab_size": 64,
            "max_position_embeddings": 32,
        },
    ),
}


def build(family):
    config_class, kwargs = FAMILIES[family]
    config = config_class(num_labels=3, **kwargs)
    return transformers.AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_are_found_generically(family):
    # the transformer layers, the embeddings below them and the head above, for every family
    model = build(family)
    stack = layer_stack(model)
    assert len(stack.blocks) == 3
    names = {id(p): n for n, p in model.named_parameters()}
    assert any("word_embeddings" in names[id(p)] for p in stack.bottom)
    assert any("classifier" in names[id(p)] for p in stack.top)
    assert not any("embeddings" in names[id(p)] and "rel_" not in names[id(p)] for p in stack.top)


@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_reaches_every_dropout_field(family):
    config_class, kwargs = FAMILIES[family]
    config = config_class(**kwargs)
    overrides = with_dropout(config, 0.37)
    assert overrides and all(v == 0.37 for v in overrides.values())
    changed = config_class(**{**kwargs, **overrides})
    assert all(getattr(changed, f) == 0.37 for f in dropout_fields(config))


def trainable_blocks(stack):
    return [all(p.requires_grad for p in b.parameters()) for b in stack.blocks]


def test_freezing_embeddings_and_bottom_layers():
    stack = layer_stack(build("bert"))
    stack.set_trainable(freeze_layers=2, gradual_unfreeze=False, epoch=0)
    assert trainable_blocks(stack) == [False, False, True]
    assert not any(p.requires_grad for p in stack.bottom)
    assert all(p.requires_grad for p in stack.top)
    stack.set_trainable(freeze_layers=0, gradual_unfreeze=False, epoch=0)
    assert all(trainable_blocks(stack)) and all(p.requires_grad for p in stack.bottom)


def test_gradual_unfreezing_goes_top_down_one_group_per_epoch():
    stack = layer_stack(build("bert"))
    seen = []
    for epoch in range(5):
        stack.set_trainable(freeze_layers=1, gradual_unfreeze=True, epoch=epoch)
        seen.append(trainable_blocks(stack))
        assert all(p.requires_grad for p in stack.top)
        assert not any(p.requires_grad for p in stack.bottom)  # frozen layers never thaw
    assert seen == [
        [False, False, False],
        [False, False, True],
        [False, True, True],
        [False, True, True],
        [False, True, True],
    ]


def test_tiny_bert_loads_from_a_folder_with_a_fresh_head(tiny_bert):
    model = load_text_classifier(str(tiny_bert), 3, {0: "a", 1: "b", 2: "c"}, dropout=0.25)
    assert model.config.hidden_dropout_prob == 0.25 and model.config.classifier_dropout == 0.25
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_unknown_model_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_hf_config(str(tmp_path / "no-model"))


def test_unknown_hub_id():
    with pytest.raises(ModelError, match="neither a local model folder nor a hub id"):
        load_hf_config("hypertweaks-test/no-such-model")
