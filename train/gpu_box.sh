#!/usr/bin/env bash
# Run the recipe (or the 3D expert's training) on an offline GPU box that has a CUDA torch, transformers, peft and
# accelerate but not this project's other packages, and that may only be reachable through short commands (a run
# outlives each command; results come back as files of at most 15 MB).
#
# On a machine with network, in the project root (once):
#   bash train/gpu_box.sh wheels            # .whl/: the wheels the box lacks (Python 3.12, x86-64): trl, datasets,
#                                           #   trimesh, pyrender, pyglet, PyOpenGL, ... (WHEEL_PYTHON=3.11 for another)
#   bash train/gpu_box.sh backgrounds       # data/backgrounds/: mate-backgrounds' photos, for the generator there
#   bash train/gpu_box.sh gl                # .gpu-gl/: GL dispatch libraries (Debian's libglvnd + GLU) and an EGL
#                                           #   vendor file, for rendering through the NVIDIA driver's EGL on a box
#                                           #   that has the driver's libEGL_nvidia but no libEGL (GL_LIBS=DIR: another)
#   bash train/gpu_box.sh park              # before sending: moves the shipped weights a run there does not read
#                                           #   (the default model's, the v5 and g4 experts') to $PARK_DIR (default
#                                           #   /tmp/occmllm-parked) so that the upload stays small, marked
#                                           #   skip-worktree so that no commit records them as deleted;
#   bash train/gpu_box.sh park --keep-default  # the same but the default model stays (a call that runs it there,
#                                           #   e.g. python -m benchmarks.bench_scoring --device cuda)
#   bash train/gpu_box.sh park --keep weights_g4 --park weights_g2  # the g4 expert goes, g2 stays here (a run
#                                           #   that reads or continues g4 there; the upload limit, 64 MiB, holds
#                                           #   one of the two)
#   bash train/gpu_box.sh unpark            #   afterwards: back in place, checked byte for byte against git
# Send the project with those folders to the box; there, in the project root:
#   bash train/gpu_box.sh start RUN [run_all.py arguments]   # e.g. start /root/run --preset default
#                                                            #   (--time-limit S: the run ends within S seconds
#                                                            #   however fast the box; leave the start, ~130 s,
#                                                            #   and the collection out of the device time left)
#   bash train/gpu_box.sh wait RUN SECONDS [DEST]            # watch it; once it ended, its results into DEST
#                                                            # (default $OUT): results.md, timing.json, run.log,
#                                                            # stages.tgz (every stage's results, no weights),
#                                                            # final.tgz.aa, .ab, ... (the final model; cat them)
#                                                            # and, when stage 0 trained a 3D expert, expert.tgz.*
#                                                            # (its weights in float16, as the shipped ones)
#   bash train/gpu_box.sh expert RUN [gpu_recon.sh arguments] # benchmarks/gpu_recon.sh detached, same `wait`
# `start` installs the wheels into /tmp/site (once per box), checks that everything imports and that pyrender
# renders offscreen, then starts the run in its own process session (it goes on when the command that started it
# returns); `wait` polls every 20 s for SECONDS at most, prints the end of the log, and collects once the run ended (before that, the stage table so far).
set -euo pipefail
cmd=${1:-help}; shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WHEELS="trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash fsspec==2026.9.0 trimesh pyrender
pyglet==2.1.19 PyOpenGL==3.1.10 freetype-py networkx imageio six"

box_env() {  # the box's environment: the carried wheels, EGL through the NVIDIA driver, the background photos
  if [ -d .whl ] && [ ! -f /tmp/site/.installed ] && ! python3 -c "import trl, datasets, trimesh, pyrender" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    touch /tmp/site/.installed
  fi
  export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
  local gl=${GL_LIBS:-.gpu-gl}
  if [ -d "$gl" ]; then
    export LD_LIBRARY_PATH=$ROOT/$gl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} PYOPENGL_PLATFORM=egl
    export __EGL_VENDOR_LIBRARY_FILENAMES=$ROOT/$gl/10_nvidia.json
  fi
  if ls data/backgrounds/*.jpg >/dev/null 2>&1; then export OCCMLLM_BACKGROUND_DIRS="$ROOT/data/backgrounds/*.jpg"; fi
  export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
}

check() {  # everything the recipe imports, and one offscreen frame
  python3 - <<'EOF'
import torch, transformers, trl, datasets, trimesh, skimage
from occmllm.render import import_pyrender
pyrender = import_pyrender()
pyrender.OffscreenRenderer(64, 64).delete()
print(f"gpu_box: torch {torch.__version__}, CUDA {torch.cuda.is_available()}, transformers {transformers.__version__}, "
      f"trl {trl.__version__}; offscreen rendering works")
EOF
}

start_detached() {  # start_detached RUN COMMAND...: once per RUN (a second start says so and only waits)
  local run=$1; shift
  if [ -f "$run.started" ]; then echo "gpu_box: $run was started already ($(cat "$run.started")); use wait"; return; fi
  mkdir -p "$(dirname "$run")"
  echo "$(date +%s) $*" > "$run.started"
  setsid nohup "$@" > "$run.log" 2>&1 < /dev/null &
  echo "gpu_box: started $* (log: $run.log)"
}

PARKED="occmllm/default_model/weights/model.safetensors occmllm/recon/weights_v5/model.safetensors
occmllm/recon/weights_v5/config.json occmllm/recon/weights_g4/model.safetensors occmllm/recon/weights_g4/config.json"
PARKABLE="$PARKED occmllm/recon/weights_g2/model.safetensors occmllm/recon/weights_g2/config.json"  # --park weights_g2
PARK_DIR=${PARK_DIR:-/tmp/occmllm-parked}

case "$cmd" in
  park)
    in_folder() { echo $2 | tr " " "\n" | grep "/$1/"; }  # in_folder FOLDER LIST: LIST's files under a FOLDER
    while [ $# -gt 0 ]; do
      case "$1" in
        --keep-default) set -- --keep default_model "${@:2}";;
        --keep) in_folder "${2:-?}" "$PARKED" >/dev/null || {
                  echo "gpu_box park: --keep takes a parked folder's name (default_model, weights_v5, weights_g4)" >&2; exit 2; }
                PARKED=$(echo $PARKED | tr " " "\n" | grep -v "/$2/"); shift 2;;
        --park) in_folder "${2:-?}" "$PARKABLE" >/dev/null || {
                  echo "gpu_box park: --park takes a shipped weights folder's name (weights_g2)" >&2; exit 2; }
                PARKED="$PARKED $(in_folder "$2" "$PARKABLE")"; shift 2;;
        *) echo "gpu_box park: unknown option $1 (--keep-default, --keep FOLDER, --park FOLDER or nothing)" >&2; exit 2;;
      esac
    done
    for f in $PARKED; do
      if [ -f "$PARK_DIR/$f" ]; then echo "gpu_box: $f is parked already"; continue; fi
      mkdir -p "$PARK_DIR/$(dirname "$f")" && mv "$f" "$PARK_DIR/$f" && git update-index --skip-worktree "$f"
    done
    echo "gpu_box: parked in $PARK_DIR (bash train/gpu_box.sh unpark puts them back)";;
  unpark)
    PARKED=$PARKABLE  # whatever a park moved
    for f in $PARKED; do
      [ -f "$PARK_DIR/$f" ] && mv "$PARK_DIR/$f" "$f"
      git update-index --no-skip-worktree "$f"
      [ -f "$f" ] || git checkout -- "$f"  # lost from the park folder: git's copy
    done
    git diff --quiet -- $PARKED || { echo "gpu_box: the unparked files differ from git's: git diff -- $PARKED" >&2; exit 1; }
    echo "gpu_box: unparked; the weights are as committed";;
  wheels)
    mkdir -p .whl
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl $WHEELS
    echo "gpu_box: $(ls .whl | wc -l) wheels in .whl ($(du -sh .whl | cut -f1))";;
  gl)
    out=${GL_LIBS:-.gpu-gl}; work=$(mktemp -d); mkdir -p "$out"
    pkgs="libegl1 libglvnd0 libgl1 libglx0 libopengl0 libgles2 libglu1-mesa"
    # shellcheck disable=SC2086
    (cd "$work" && apt-get download $pkgs >/dev/null 2>&1) || { apt-get update -qq >/dev/null 2>&1; (cd "$work" && apt-get download $pkgs >/dev/null); }
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
    cp -a "$work"/root/usr/lib/x86_64-linux-gnu/lib*.so* "$out/"
    (cd "$out" && ln -sf libEGL.so.1 libEGL.so && ln -sf libGL.so.1 libGL.so && ln -sf libGLU.so.1 libGLU.so && ln -sf libOpenGL.so.0 libOpenGL.so)
    echo '{"file_format_version": "1.0.0", "ICD": {"library_path": "/usr/lib/libEGL_nvidia.so.0"}}' > "$out/10_nvidia.json"
    rm -rf "$work"
    echo "gpu_box: $out ($(du -sh "$out" | cut -f1)): $(ls "$out" | wc -l) files";;
  backgrounds)
    src=/usr/share/backgrounds/mate/nature
    [ -d "$src" ] || { echo "gpu_box: $src not found: install mate-backgrounds (make setup does)" >&2; exit 1; }
    mkdir -p data/backgrounds && cp "$src"/*.jpg data/backgrounds/
    echo "gpu_box: $(ls data/backgrounds | wc -l) photos in data/backgrounds";;
  start)
    [ $# -ge 1 ] || { echo "usage: gpu_box.sh start RUN [run_all.py arguments]" >&2; exit 2; }
    run=$1; shift
    box_env; check
    start_detached "$run" python3 train/run_all.py --out "$run" "$@";;
  expert)
    [ $# -ge 1 ] || { echo "usage: gpu_box.sh expert RUN [gpu_recon.sh arguments]" >&2; exit 2; }
    run=$1; shift
    box_env; check
    start_detached "$run" bash benchmarks/gpu_recon.sh --run "$run" --out-dir "$run.out" "$@";;
  wait)
    [ $# -ge 2 ] || { echo "usage: gpu_box.sh wait RUN SECONDS [DEST]" >&2; exit 2; }
    run=$1; limit=$2; dest=${3:-${OUT:-$run.results}}; t0=$(date +%s)
    [ -f "$run.started" ] || { echo "gpu_box: $run was never started" >&2; exit 2; }
    pid_alive() { pgrep -f -- "--out $run( |\$)|--run $run( |\$)" >/dev/null; }
    progress() {  # the stage table so far and the log without progress bars, in DEST all along: a call cut off
      cp "$run/results.md" "$dest/" 2>/dev/null || true  # before the end still returns the finished stages
      tr '\r' '\n' < "$run.log" | grep -v -E "(it/s|s/it)\]" > "$dest/run.log" || true
    }
    mkdir -p "$dest"
    while pid_alive && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do progress; sleep 20; done
    progress
    echo "gpu_box: $(( $(date +%s) - $(cut -d' ' -f1 "$run.started") )) s since the start"
    grep -v -E "^[[:space:]]*$" "$dest/run.log" | tail -25 | cut -c1-300 || true
    if pid_alive; then echo "gpu_box: still running"; exit 0; fi
    pack() {  # pack DIR NAME: the files of DIR into DEST/NAME.tgz.aa, .ab, ... (parts of 15 MB)
      tar czf "$run.$2.tgz" -C "$1" . && split -b 15M "$run.$2.tgz" "$dest/$2.tgz."
    }
    if [ -d "$run.out" ]; then  # an expert run: gpu_recon.sh's results; the weights in float16, in parts
      box_env  # a wait in its own command has not got the carried packages on its path yet (trimesh)
      cp "$run.out"/*.txt "$run.out"/*.csv "$run.out"/*.json "$dest/" 2>/dev/null || true
      python3 -c "import sys; from occmllm.recon.model import OccupancyNet
OccupancyNet.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2], half=True)" "$run" "$run.half"
      pack "$run.half" weights
    else
      cp "$run/timing.json" "$dest/" 2>/dev/null || true
      [ -d "$run/final" ] && tar czf "$run.final.tgz" -C "$run" final && split -b 15M "$run.final.tgz" "$dest/final.tgz."
      # an expert stage 0 trained (not a shipped one it chose; stored in float16 by train/expert.py:store_as_shipped):
      # the final model reads its renders, so it ships with it
      [ -f "$run/stage_0/model/model.safetensors" ] && pack "$run/stage_0/model" expert
      tar czf "$dest/stages.tgz" -C "$run" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' \
        --exclude=data --exclude=clarity_data --exclude='checkpoint*' --exclude=final --exclude=trackio . || true
    fi
    ls -la "$dest";;
  *)
    sed -n "2,/^set -euo/{/^set -euo/!p}" "$0";;
esac
