"""The meta-dataset: a fixed design of recipes run once on many tasks, every epoch's validation
and test predictions recorded, so that any search strategy can be replayed in seconds
(`python -m bench meta simulate`). See bench/README.md, "The meta-dataset"."""

from __future__ import annotations

from bench import RESULTS_DIR

META_DIR = RESULTS_DIR / "meta"
