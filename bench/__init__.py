"""Benchmark harness: hypertweaks against the peers on search quality and speed.

Entry point: `python -m bench {run,quick,report,speed}`; see bench/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# Cells, plots and speed runs; RESULTS.md goes next to the default folder, else inside it.
RESULTS_DIR = Path(os.environ.get("HYPERTWEAKS_BENCH_RESULTS", BENCH_DIR / "results")).resolve()
RESULTS_MD = (
    BENCH_DIR / "RESULTS.md" if RESULTS_DIR == BENCH_DIR / "results" else RESULTS_DIR / "RESULTS.md"
)
WORK_DIR = BENCH_DIR / "work"  # data cuts, token caches, study folders; git-ignored

# Everything offline and quiet, before transformers is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
