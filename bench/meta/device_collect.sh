#!/bin/bash
# Collect text design cells on a lent GPU machine (the `device` tool), one process per task,
# until a deadline; the cells come back as tarballs under $OUT. bench/README.md says how to
# prepare .dev/ (bench/meta/device_prepare.sh: wheels, MiniLM in float16, a stand-in
# package), how to keep the committed probabilities from travelling, and what to carry.
# Locally, for a dry run: PY=.venv/bin/python DEVICE=cpu SKIP_INSTALL=1 ...
#   RECIPES      stages of the design's prefix to fill, in order (default "16 24")
#   SEEDS        seeds of every stage (default 0,1,2)
#   CALIBRATE    recipes re-run at seed 0 into a separate folder, to compare with the CPU cells
#   SECONDS_LEFT collection stops this many seconds after the start (default 420)
set -u
start=$(date +%s)
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
RECIPES=${RECIPES:-"16 24"}
SEEDS=${SEEDS:-0,1,2}
CALIBRATE=${CALIBRATE:-2}
SECONDS_LEFT=${SECONDS_LEFT:-420}
OUT=${OUT:?set OUT}
CUT=n600-v200-t500-L48
TASKS=${TASKS:-"ag-news banking77 mpqa snips sst2 sst5 trec6 tweeteval-emoji tweeteval-emotion
tweeteval-hate tweeteval-irony tweeteval-offensive tweeteval-sentiment"}

if [ -z "${SKIP_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .dev/whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/.dev/site:$PWD/src:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 MINILM_DIR=${MINILM_DIR:-/tmp/minilm}
# the weights travel as float16 (the 64 MiB limit); the model trains from them cast back
$PY - <<EOF || exit 1
import shutil
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src, dst = Path(".dev/minilm"), Path("$MINILM_DIR")
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.suffix != ".safetensors":
        shutil.copy(f, dst / f.name)
w = load_file(src / "model.fp16.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in w.items()},
          dst / "model.safetensors")
print("[device]", torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())
EOF
# the cuts travel (bench/work/data); make_cut checks their source folder exists
data=${HYPERTWEAKS_BENCH_DATA:-/work/shared/data}
for t in $TASKS; do
  mkdir -p "$data/$t"
  [ -e "$data/$t/train.csv" ] || cp bench/work/data/$CUT/$t/train.csv bench/work/data/$CUT/$t/test.csv "$data/$t/"
done
export HYPERTWEAKS_BENCH_DATA=$data
mkdir -p "$OUT/logs" bench/results/meta/$CUT/cells
touch /tmp/collect-marker

stage() {  # stage NAME RECIPES SEEDS [extra args]: one process per task, until the deadline
  local name=$1 recipes=$2 seeds=$3; shift 3
  local left=$((start + SECONDS_LEFT - $(date +%s)))
  [ "$left" -gt 10 ] || return 0
  for t in $TASKS; do
    timeout "$left" $PY -m bench meta collect --recipes "$recipes" --seeds "$seeds" --tasks "$t" \
      --device "$DEVICE" --threads 1 "$@" >>"$OUT/logs/$name-$t.log" 2>&1 &
  done
  wait
  echo "[device] stage $name done at $(($(date +%s) - start))s"
}

stage calibrate "$CALIBRATE" 0 --out /tmp/calibrate
for r in $RECIPES; do stage "r$r" "$r" "$SEEDS"; done

meta=bench/results/meta/$CUT
find $meta /tmp/calibrate -name "*.tmp*" -delete 2>/dev/null
# the task files of records and probabilities (bench/README.md: merge the probabilities back)
tar -czf "$OUT/cells.tgz" -C $meta cells probs
[ -d /tmp/calibrate ] && tar -czf "$OUT/calibrate.tgz" -C /tmp/calibrate .
tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -r "$OUT/logs"
echo "[device] done in $(($(date +%s) - start))s"
