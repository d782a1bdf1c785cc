#!/usr/bin/env bash
# Train and benchmark the learned 3D expert on one GPU box in one go (< 9 minutes on an H100 with 16 cores):
# generate the synthetic dataset (if missing), prepare the voxel ground truth (all cores), train for whatever time is
# left of the budget, benchmark on the test split, and copy the weights + results into $OUT (or --out-dir).
#
#   bash benchmarks/gpu_recon.sh                                   # GPU box defaults: 32,000 samples, 8.5 min
#   bash benchmarks/gpu_recon.sh --n 60 --total-minutes 1.5 --device cpu --data /tmp/s --run /tmp/r --tiny
#
# Options (all optional): --n N (samples, both splits) --data DIR --run DIR (training folder; a rerun resumes)
# --total-minutes M (wall-clock budget of the whole script) --device cuda|cpu --batch-size B --lr LR --workers W
# --bench-limit N (test photos scored) --out-dir DIR (default $OUT) --tiny (small network, CPU smoke runs)
# --minutes M (fix the training time instead of using what the budget leaves) --width W (network width, default 32 as
# shipped; with --init: the init's width, a larger W widens it) --init DIR (start from a trained expert's weights, e.g.
# occmllm/recon/weights) --seed S (the dataset's seed, default 0) --split-test F (share of test photos, default 0.1)
# --thin-targets (train thin parts' surface cells as inside: occmllm.recon.data.thin_as_inside)
# --gpus N (train on N GPUs of the box under torchrun, DDP: --batch-size per GPU; default 1)
# --generation G (the synthetic data's generation: 1, as the shipped experts were trained and measured, or 2)
# Results: OUT_DIR/recon/{config.json,model.safetensors} (drop into occmllm/recon/weights), OUT_DIR/bench.txt,
# OUT_DIR/bench.json, OUT_DIR/loss.csv, OUT_DIR/eval.csv, OUT_DIR/log.txt (everything printed).
set -euo pipefail
START=$(date +%s)
N=32000; DATA=data/synth; RUN=runs/recon_gpu; TOTAL=8.5; DEVICE=cuda; BATCH=256; LR=2e-3
WORKERS=$(nproc); BENCH_LIMIT=600; OUT_DIR=${OUT:-out}; TINY=""; MINUTES=""; WIDTH=""; INIT=""; SEED=0; GPUS=1; SPLIT_TEST=0.1; THIN=""; GEN=1
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --n) N=$2; shift 2;; --data) DATA=$2; shift 2;; --run) RUN=$2; shift 2;;
    --total-minutes) TOTAL=$2; shift 2;; --device) DEVICE=$2; shift 2;; --batch-size) BATCH=$2; shift 2;;
    --lr) LR=$2; shift 2;; --workers) WORKERS=$2; shift 2;; --bench-limit) BENCH_LIMIT=$2; shift 2;;
    --out-dir) OUT_DIR=$2; shift 2;; --tiny) TINY=--tiny; shift;; --minutes) MINUTES=$2; shift 2;; --width) WIDTH=$2; shift 2;;
    --init) INIT="--init $2"; shift 2;; --seed) SEED=$2; shift 2;; --gpus) GPUS=$2; shift 2;;
    --split-test) SPLIT_TEST=$2; shift 2;; --thin-targets) THIN=--thin-targets; shift;;
    --generation) GEN=$2; shift 2;;
    -h|--help) sed -n 2,19p "$0"; exit 0;;
    *) echo "gpu_recon.sh: unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
mkdir -p "$OUT_DIR/recon"
exec > >(tee -a "$OUT_DIR/log.txt") 2>&1
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
quiet() { tr '\r' '\n' | grep -v -E "(it/s|s/it)\]$|^[[:space:]]*$" || true; }  # drop progress-bar lines
elapsed() { echo $(( $(date +%s) - START )); }
echo "== gpu_recon: n=$N data=$DATA run=$RUN device=$DEVICE batch=$BATCH workers=$WORKERS budget=${TOTAL} min"
$PY -c "import torch, trimesh, skimage; from occmllm.render import import_pyrender; import_pyrender()
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# 1. the dataset (resumable: existing samples are skipped)
have=$(ls "$DATA/train/shapes" 2>/dev/null | wc -l || true); have_test=$(ls "$DATA/test/shapes" 2>/dev/null | wc -l || true)
if [ $((have + have_test)) -lt "$N" ]; then
  echo "== [$(elapsed) s] generating $N samples into $DATA ($((have + have_test)) there)"
  $PY -m data_tools.synth --out "$DATA" --n "$N" --seed "$SEED" --workers "$WORKERS" --split-test "$SPLIT_TEST" \
    --generation "$GEN" 2>&1 | quiet | tail -5
fi
echo "== [$(elapsed) s] dataset: $(ls "$DATA/train/shapes" | wc -l) train, $(ls "$DATA/test/shapes" | wc -l) test"

# 2. the voxel ground truth (parallel, resumable)
$PY -m occmllm.recon.data --data "$DATA" --out "$RUN" --workers "$WORKERS" 2>&1 | quiet
echo "== [$(elapsed) s] ground truth ready"

# 3. train for what the budget leaves (reserve: ~50 s loading the data onto the GPU + ~30 s evaluations + ~50 s benchmark)
if [ -z "$MINUTES" ]; then
  MINUTES=$($PY -c "print(max(0.2, round(($TOTAL * 60 - $(elapsed) - 135) / 60, 2)))")
fi
echo "== [$(elapsed) s] training $MINUTES min on $DEVICE"
[ -z "$WIDTH" ] && [ -z "$INIT" ] && [ -z "$TINY" ] && WIDTH=32  # (--tiny: width 16)
LAUNCH="$PY"; [ "$GPUS" -gt 1 ] && LAUNCH="$PY -m torch.distributed.run --standalone --nproc_per_node $GPUS"
$LAUNCH -m occmllm.recon.train --data "$DATA" --out "$RUN" --minutes "$MINUTES" --device "$DEVICE" \
  --batch-size "$BATCH" --lr "$LR" --workers "$WORKERS" --threads 4 --eval-every 45 --save-every 1000 ${WIDTH:+--width $WIDTH} --quiet $TINY $INIT $THIN
cp "$RUN/config.json" "$RUN/model.safetensors" "$OUT_DIR/recon/"
cp "$RUN/loss.csv" "$RUN/eval.csv" "$OUT_DIR/" 2>/dev/null || true
echo "== [$(elapsed) s] trained; weights in $OUT_DIR/recon"

# 4. benchmark on the test split: IoU / Chamfer / F-score per visible-fraction bucket + reconstruct() time
$PY -m benchmarks.bench_recon --data "$DATA" --expert "learned:$RUN" --limit "$BENCH_LIMIT" --workers "$WORKERS" \
  --timing 30 --json "$OUT_DIR/bench.json" 2>&1 | quiet | tee "$OUT_DIR/bench.txt"
echo "== [$(elapsed) s] done"
