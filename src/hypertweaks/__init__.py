"""hypertweaks: fine-tune a pretrained model on your data and find its fine-tuning
hyperparameters with as little compute as possible."""

from hypertweaks.config import ConfigError, Experiment, load_experiment
from hypertweaks.data import DataError
from hypertweaks.models import ModelError
from hypertweaks.predict import load
from hypertweaks.search import Result, tune

__all__ = [
    "ConfigError",
    "DataError",
    "Experiment",
    "ModelError",
    "Result",
    "load",
    "load_experiment",
    "tune",
]
__version__ = "0.1.0"
