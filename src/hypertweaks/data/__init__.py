"""Reading, checking and splitting user data. Knows nothing of models."""

from hypertweaks.data.splits import (
    Split,
    Splits,
    check_not_in_train,
    load_splits,
    stratified_split,
    stratified_subset,
)
from hypertweaks.data.tables import DataError, read_table, require_columns

__all__ = [
    "DataError",
    "Split",
    "Splits",
    "check_not_in_train",
    "load_splits",
    "read_table",
    "require_columns",
    "stratified_split",
    "stratified_subset",
]
