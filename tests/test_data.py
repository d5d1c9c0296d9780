import numpy as np
import pandas as pd
import pytest
from conftest import make_texts

from hypertweaks.config import make_experiment
from hypertweaks.data import DataError, load_splits, read_table, stratified_split
from hypertweaks.tasks import make_task
from hypertweaks.tasks.text import drop_empty_texts


def splits_from(train, validation=None, test=None, fraction=0.2, max_dropped=0.1):
    tables = {
        "train": (train, "train.csv"),
        "validation": None if validation is None else (validation, "val.csv"),
        "test": None if test is None else (test, "test.csv"),
    }
    return load_splits(
        tables, "text", "label", fraction, 0, clean=drop_empty_texts(max_dropped, "text")
    )


def table(labels, texts=None):
    return pd.DataFrame({"text": texts or [f"t{i}" for i in range(len(labels))], "label": labels})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_reads_every_table_format(tmp_path, suffix):
    frame = table(["a", "b"])
    path = tmp_path / f"data{suffix}"
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    assert read_table(path).to_dict("list") == frame.to_dict("list")


def test_reads_a_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_pandas(table(["a", "b"]))}).save_to_disk(
        tmp_path / "ds"
    )
    assert read_table(tmp_path / "ds", "train")["label"].tolist() == ["a", "b"]
    with pytest.raises(DataError, match="splits \\['train'\\]"):
        read_table(tmp_path / "ds", "test")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="train data .*nope.csv' does not exist"):
        read_table(tmp_path / "nope.csv")


def test_empty_table(tmp_path):
    (tmp_path / "e.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="holds no rows"):
        read_table(tmp_path / "e.csv")


def test_single_class():
    with pytest.raises(DataError, match="single class \\('a'\\)"):
        splits_from(table(["a"] * 10))


def test_labels_unseen_in_train():
    with pytest.raises(DataError, match="test has labels that train does not have: 'c'"):
        splits_from(table(["a", "b"] * 5), table(["a", "b"]), table(["a", "c"]))


def test_empty_texts_are_dropped_with_a_count():
    train = table(["a", "b"] * 10, [None, " "] + [f"x{i}" for i in range(18)])
    splits = splits_from(train, fraction=0.2, max_dropped=0.2)
    assert len(splits.train) + len(splits.validation) == 18
    assert any("dropped 2 empty or missing texts" in note for note in splits.notes)


def test_too_many_empty_texts_is_an_error():
    train = table(["a", "b"] * 5, [None] * 5 + ["x"] * 5)
    with pytest.raises(DataError, match="5 of 10 texts \\(50%\\) are empty"):
        splits_from(train)


def test_class_with_one_example_cannot_be_split():
    with pytest.raises(DataError, match="class 'rare' has only 1 example"):
        splits_from(table(["a", "b"] * 5 + ["rare"]))


def test_validation_is_carved_stratified_and_seeded():
    labels = np.array([0] * 80 + [1] * 20)
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert len(held) == 20 and set(kept).isdisjoint(held)
    assert (labels[held] == 1).sum() == 4  # same 80/20 proportions
    assert stratified_split(labels, 0.2, seed=3) == (kept, held)


def test_integer_labels_keep_their_values():
    splits = splits_from(table([3, 7] * 10))
    assert splits.classes == [3, 7]
    assert set(splits.train.labels.tolist()) == {0, 1}


def test_validation_or_test_examples_that_are_training_examples():
    train = table(["a", "b"] * 10)  # texts t0 .. t19
    other = table(["a", "b"] * 5, [f"new {i}" for i in range(10)])
    # the training file given again as validation: its scores would reward memory
    with pytest.raises(DataError, match=r"20 of 20 validation \(val.csv\) examples \(100%\) are"):
        splits_from(train, validation=train)
    # a test file that holds the training rows
    with pytest.raises(DataError, match=r"test \(test.csv\) .* would overrate the model"):
        splits_from(train, validation=other, test=train.head(6))
    # a few repeated texts (spaces aside) are a warning, kept in the notes the user sees
    shared = table(["a", "b"] * 5, [" t0", "t1 "] + [f"new {i}" for i in range(8)])
    splits = splits_from(train, validation=other, test=shared)
    assert "warning: 2 of 10 test (test.csv) examples (20%) are also in train" in splits.notes[0]
    assert len(splits.test) == 10


def test_the_user_is_told_how_many_training_texts_max_length_cuts(tiny_bert, tmp_path):
    train = make_texts(10, seed=0)  # five words a text: seven tokens with [CLS] and [SEP]
    train.loc[:4, "text"] = train.loc[:4, "text"] + " and so on and on"  # 12 tokens
    train.to_csv(tmp_path / "train.csv", index=False)
    make_texts(3, seed=1).to_csv(tmp_path / "validation.csv", index=False)
    fields = {"model": str(tiny_bert), "runs_dir": str(tmp_path / "runs")}
    for role in ("train", "validation"):
        fields[role] = str(tmp_path / f"{role}.csv")

    task = make_task(make_experiment({**fields, "max_length": 8}), tmp_path / "cache")
    task.prepare()
    assert (
        "train: 5 of 30 texts (17%) are longer than max_length 8 tokens (the longest 12) and are "
        "cut to it" in task.splits.notes[0]
    )
    task = make_task(make_experiment({**fields, "max_length": 12}), tmp_path / "cache")
    task.prepare()
    assert not any("longer than max_length" in note for note in task.splits.notes)


def test_training_texts_given_twice_with_different_labels_are_a_warning():
    train = table(["a", "b"] * 10, ["same", "same "] + [f"t{i}" for i in range(18)])
    other = table(["a", "b"] * 5, [f"new {i}" for i in range(10)])
    notes = splits_from(train, validation=other).notes
    assert notes == [
        "warning: training examples that repeat with different labels: 1 (e.g. 'same' is 'a' "
        "and 'b'); fix or remove them if they are mistakes"
    ]
    assert splits_from(table(["a", "b"] * 10), validation=other).notes == []


def test_a_validation_or_test_file_without_some_classes_is_a_warning():
    train = table(["a", "b", "c"] * 6)
    validation = table(["a", "b"] * 3, [f"new {i}" for i in range(6)])  # no 'c'
    test = table(["a", "b", "c"] * 2, [f"other {i}" for i in range(6)])
    notes = splits_from(train, validation=validation, test=test).notes
    assert notes == [
        "warning: validation (val.csv) has no example of 1 of the 3 training classes ('c'): "
        "its scores say nothing of them; add examples of each class"
    ]
