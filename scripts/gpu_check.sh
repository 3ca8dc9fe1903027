#!/usr/bin/env bash
# scripts/gpu_check.sh: CUDA against CPU, on a machine with an NVIDIA GPU, in one go (meant to take under 10
# minutes there). Writes bench/results/gpu.md.
#
#   1. make setup GPU=1, make build GPU=1, and the helper example torch/examples/gpu_check/;
#      checks that libtorch now sees the GPU (else the link dropped libtorch_cuda: stop);
#   2. the sample dataset through mine once, then the train stage twice on the same mined pairs:
#      train.device = "cpu" and "cuda" (train.epochs = EPOCHS, patience 0, so both run every epoch);
#      per-epoch losses side by side with the gpu_check example's devcheck module's tolerances (epoch 0, the untrained model: float
#      rounding, 1e-3; later epochs: 15%, since the two devices draw different dropout masks), and the step
#      time of each device (the train manifest's steps_per_s; includes the first step's warm-up);
#   3. the rest of the pipeline after the CUDA training with model.device = "cuda" (index and eval on ONNX
#      Runtime's CUDA provider; export's parity check runs on the CPU by design);
#   4. the BoolQ passages (corpus.jsonl `text`) embedded by ONNX Runtime with the exported base model on the
#      CPU and on CUDA: passages/s each and the cosine of CUDA to CPU per passage;
#   5. the report.
#
# Usage: scripts/gpu_check.sh [--cpu-only] [--no-setup] [--epochs N] [--limit N] [--boolq DIR] [--out FILE]
#   --cpu-only  no GPU needed: the same steps with CPU only (the CUDA runs are replaced by CPU runs, so the loss
#               table compares the CPU run with itself). It checks the script, not the GPU: its report goes to
#               $TMPDIR/gpu_check_cpu_only.md unless --out says otherwise, never to bench/results/gpu.md.
#   --no-setup  skip `make setup` (a machine without registry access: COLTRAST_CACHE must already hold what
#               setup GPU=1 installs, or LIBTORCH must name a CUDA libtorch 2.11 with its nvidia libraries)
#   --epochs N  training epochs on the sample (default 3; the sample has 12 training pairs: 2 steps per epoch)
#   --limit N   BoolQ passages to embed (default 0 = all 2939)
#   --boolq DIR the BoolQ folder (default ../shared/data/boolq beside the repo, else /work/shared/data/boolq)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CPU_ONLY=0
NO_SETUP=0
EPOCHS=3
LIMIT=0
OUT=""
BOOLQ=""
while (($#)); do
  case "$1" in
    --cpu-only) CPU_ONLY=1 ;;
    --no-setup) NO_SETUP=1 ;;
    --epochs) EPOCHS="$2"; shift ;;
    --limit) LIMIT="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --boolq) BOOLQ="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check: --epochs: expected an integer >= 1, got $EPOCHS" >&2; exit 2; }
[[ "$LIMIT" =~ ^[0-9]+$ ]] || { echo "gpu_check: --limit: expected an integer >= 0, got $LIMIT" >&2; exit 2; }
if [[ -z "$BOOLQ" ]]; then
  for d in "$REPO/../shared/data/boolq" /work/shared/data/boolq; do
    [[ -f "$d/corpus.jsonl" ]] && { BOOLQ="$d"; break; }
  done
fi
[[ -n "$BOOLQ" && -f "$BOOLQ/corpus.jsonl" ]] || { echo "gpu_check: no BoolQ corpus.jsonl (pass --boolq DIR)" >&2; exit 2; }
if ((CPU_ONLY)); then
  OUT="${OUT:-${TMPDIR:-/tmp}/gpu_check_cpu_only.md}"
  GPU=""
  DEV=cpu
else
  OUT="${OUT:-$REPO/bench/results/gpu.md}"
  GPU=1
  DEV=cuda
  if ! command -v nvidia-smi >/dev/null 2>&1 && [[ ! -e /dev/nvidia0 ]]; then
    echo "gpu_check: no NVIDIA GPU here (no nvidia-smi, no /dev/nvidia0); --cpu-only checks the CPU half" >&2
    exit 1
  fi
fi
export GPU
export COLTRAST_CACHE="${COLTRAST_CACHE:-$HOME/.cache/coltrast}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$COLTRAST_CACHE/target}"
export LIBTORCH="${LIBTORCH:-$COLTRAST_CACHE/libtorch}"
BIN="$CARGO_TARGET_DIR/release/coltrast"
HELPER="$CARGO_TARGET_DIR/release/examples/gpu_check"
FEATURES=()
((CPU_ONLY)) || FEATURES=(--features cuda)
log() { printf '[gpu_check %3ds] %s\n' "$SECONDS" "$*" >&2; }
# The artifact dir a `coltrast run` printed for a stage ("train    ran   83.1 s  ./artifacts/train/<fp>").
stage_dir() { awk -v s="$1" '$1 == s && ($2 == "ran" || $2 == "cached") { print $NF }' "$2" | tail -1; }
stat_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"].get(sys.argv[2], ""))' "$1" "$2"; }

# --- 1. setup and build -------------------------------------------------------------------------------------
t=$SECONDS
if ((NO_SETUP)); then
  log "setup skipped (--no-setup)"
  BUILD_ARGS=(-o setup)
else
  log "make setup GPU=$GPU"
  make -C "$REPO" --no-print-directory setup
  BUILD_ARGS=()
fi
setup_s=$((SECONDS - t)); t=$SECONDS
log "make build GPU=$GPU and the gpu_check helper"
make -C "$REPO" --no-print-directory "${BUILD_ARGS[@]}" build
(cd "$REPO" && cargo build --release --locked -p coltrast-torch --example gpu_check "${FEATURES[@]}")
build_s=$((SECONDS - t))
seen=$("$HELPER" device)
log "libtorch: $seen"
if ((!CPU_ONLY)) && [[ "$seen" != *"cuda_available=true"* ]]; then
  echo "gpu_check: the GPU=1 build does not see the GPU ($seen): is libtorch_cuda linked (readelf -d $BIN-torch)?" >&2
  exit 1
fi

# --- 2. train on both devices, on the same mined pairs ---------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/pipeline.toml" <<EOF
[ingest]
path = "$REPO/data/ai_projects_dataset.json"
[train]
epochs = $EPOCHS
patience = 0
EOF
cd "$WORK"
log "sample: ingest, chunk, mine"
"$BIN" run mine > "$WORK/mine.log" 2>&1 || { cat "$WORK/mine.log" >&2; exit 1; }
declare -A TRAIN_DIR TRAIN_S
for d in cpu "$DEV"; do
  [[ -n "${TRAIN_DIR[$d]:-}" ]] && continue
  t=$SECONDS
  log "train on $d ($EPOCHS epochs)"
  "$BIN" run train --set train.device="$d" > "$WORK/train-$d.log" 2>&1 || { cat "$WORK/train-$d.log" >&2; exit 1; }
  TRAIN_DIR[$d]="$WORK/$(stage_dir train "$WORK/train-$d.log")"
  TRAIN_S[$d]=$((SECONDS - t))
done
"$HELPER" losses "${TRAIN_DIR[cpu]}" "${TRAIN_DIR[$DEV]}" > "$WORK/losses.md"
log "$(tail -1 "$WORK/losses.md")"

# --- 3. the rest of the pipeline on the device -----------------------------------------------------------------
t=$SECONDS
log "export, index and eval with train.device=$DEV model.device=$DEV"
"$BIN" run --set train.device="$DEV" --set model.device="$DEV" > "$WORK/pipeline.log" 2>&1 \
  || { cat "$WORK/pipeline.log" >&2; exit 1; }
pipeline_s=$((SECONDS - t))
EXPORT_DIR="$WORK/$(stage_dir export "$WORK/pipeline.log")"
INDEX_DIR="$WORK/$(stage_dir index "$WORK/pipeline.log")"
index_device=$(stat_of "$INDEX_DIR/manifest.json" device)
best=$(grep -m1 '^best system' "$WORK/pipeline.log" || true)

# --- 4. BoolQ passages through ONNX Runtime -------------------------------------------------------------------
if ((CPU_ONLY)); then ORT_LIB="$COLTRAST_CACHE/onnxruntime/libonnxruntime.so"; DEVICES=cpu
else ORT_LIB="$COLTRAST_CACHE/onnxruntime-gpu/libonnxruntime.so"; DEVICES=cpu,cuda; fi
log "BoolQ passages (limit $LIMIT) on $DEVICES"
"$HELPER" embed "$EXPORT_DIR/base" "$BOOLQ/corpus.jsonl" "$ORT_LIB" "$LIMIT" "$DEVICES" > "$WORK/embed.md"

# --- 5. report -----------------------------------------------------------------------------------------------
gpu_name="none"
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_name=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo unknown)
fi
cpu_name=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
step_row() {
  local d=$1 m="${TRAIN_DIR[$1]}/manifest.json"
  local sps steps
  sps=$(stat_of "$m" steps_per_s); steps=$(stat_of "$m" steps)
  python3 -c 'import sys; d,steps,sps,wall=sys.argv[1:]; sps=float(sps); print(f"| {d} | {steps} | {sps:.3f} | {1/sps:.3f} | {wall} |")' \
    "$d" "$steps" "$sps" "${TRAIN_S[$1]}"
}
mkdir -p "$(dirname "$OUT")"
{
  echo "# GPU check: CUDA against CPU"
  echo
  if ((CPU_ONLY)); then
    echo "**Dry run with --cpu-only: no GPU was used, and the \"CUDA\" columns are a second look at the CPU run.**"
    echo "It checks that the script and its helper work; it measures nothing about CUDA."
    echo
  fi
  echo "Made by \`scripts/gpu_check.sh$( ((CPU_ONLY)) && echo ' --cpu-only')\` on $(date -u +%Y-%m-%d), commit $commit."
  echo "GPU: $gpu_name. CPU: $cpu_name, $(nproc) cores. libtorch: $seen."
  echo "Setup (make setup GPU=$GPU): ${setup_s} s; build (make build GPU=$GPU + helper): ${build_s} s."
  echo
  echo "## Training on the sample: per-epoch losses"
  echo
  echo "The same mined pairs (the sample dataset, default settings), train.epochs = $EPOCHS, patience 0, seed 42,"
  echo "on each device. Epoch 0 is the untrained model's validation pass (forward only): tolerance 1e-3, float"
  echo "rounding. Later epochs: 15% relative, because libtorch's CPU and CUDA generators give different dropout"
  echo "masks for the same seed, so the runs take different paths (the gpu_check example's devcheck module)."
  echo
  cat "$WORK/losses.md"
  echo
  echo "## Step time"
  echo
  echo "| device | steps | steps/s | s/step | train stage wall s |"
  echo "|---|---|---|---|---|"
  step_row cpu
  ((CPU_ONLY)) || step_row "$DEV"
  echo
  echo "(steps/s over the whole run, first step included; batch_size 8, each pair with 3 hard negatives.)"
  echo
  echo "## The rest of the pipeline after the $DEV training, model.device = \"$DEV\""
  echo
  echo "export, index and eval: ${pipeline_s} s; the index manifest's device stat: $index_device."
  echo "$best"
  echo
  echo "## BoolQ passages through ONNX Runtime (exported base model, $(basename "$ORT_LIB") of $(basename "$(dirname "$(readlink -f "$ORT_LIB")")"))"
  echo
  cat "$WORK/embed.md"
} > "$OUT"
log "wrote $OUT (total ${SECONDS} s)"
