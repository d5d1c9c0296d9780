"""The names of each strategy part the experiment may choose, without importing what builds
them (Optuna): config reads these. tests/test_architecture.py checks they match the registries."""

SAMPLER_NAMES = ("tpe", "random")
PRUNER_NAMES = ("hyperband", "median", "none")
START_NAMES = ("defaults", "none")
SELECTOR_NAMES = ("keep-defaults", "best")
FINAL_NAMES = ("soup", "refit", "kept")
