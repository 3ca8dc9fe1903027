#!/usr/bin/env bash
# `make bench`: every benchmark, each against its baseline in the same run. Results go to bench/results/.
# Python appears here only to race the Python baselines (and to time commands); the pipeline never calls it.
# BENCH=noop,encoder,... selects sections (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
CACHE="${COLTRAST_CACHE:-$HOME/.cache/coltrast}"
export BIN="${CARGO_TARGET_DIR:-$CACHE/target}/release/coltrast"
export MODEL_DIR="$CACHE/models/all-MiniLM-L6-v2"
export BOOLQ="${BOOLQ:-$(cd .. && pwd)/shared/data/boolq}"
want() { [[ -z "${BENCH:-}" || ",$BENCH," == *",$1,"* ]]; }

if want noop; then
  python3 bench/noop.py "${BENCH_REPEATS:-15}" | tee bench/results/noop.md
fi
if want encoder; then
  if [[ ! -d "$BOOLQ" ]]; then echo "[bench] skipping encoder: BoolQ not found at $BOOLQ (set BOOLQ=...)"; else
    cargo build --release --locked -p coltrast-torch --example embed_bench -q
    export EXAMPLE="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/embed_bench"
    export BENCH_PY="$(bash bench/venv.sh)"
    python3 bench/encoder.py | tee bench/results/encoder.md
  fi
fi
if want chunking; then
  python3 bench/chunking.py | tee bench/results/chunking.md
fi
if want serve; then
  if [[ ! -d "$BOOLQ" ]]; then echo "[bench] skipping serve: BoolQ not found at $BOOLQ"; else
    cargo build --release --locked --example serve_bench -q
    export SERVE_BENCH="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/serve_bench"
    export BENCH_PY="$(bash bench/venv.sh)"
    python3 bench/serve.py | tee bench/results/serve.md
  fi
fi
# A section that races Python peers on BoolQ in the bench venv, with serve_bench built: name, script, result file.
boolq_venv_section() {
  if [[ ! -d "$BOOLQ" ]]; then echo "[bench] skipping $1: BoolQ not found at $BOOLQ"; return; fi
  cargo build --release --locked --example serve_bench -q
  export SERVE_BENCH="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/serve_bench"
  export BENCH_PY="$(bash bench/venv.sh)"
  "$BENCH_PY" "$2" | tee "$3"
}
# cpu-race: coltrast's float32 and int8 exports against sentence-transformers' torch, onnx and openvino backends
# and OpenVINO static int8, on the CPU at hand (bench/cpu_race.py; prints the CPU's flags)
if want cpu-race; then boolq_venv_section cpu-race bench/cpu_race.py bench/results/cpu-race.md; fi
# int8-probe: which dense layers take a static (calibrated) int8 activation scale, and what a QDQ model of the
# float32 export gains on OpenVINO and ONNX Runtime (bench/int8_static_probe.py; quantised by onnxruntime's tools)
if want int8-probe; then boolq_venv_section int8-probe bench/int8_static_probe.py bench/results/int8-probe.md; fi
if want serve-http; then
  if [[ ! -d "$BOOLQ" ]]; then echo "[bench] skipping serve-http: BoolQ not found at $BOOLQ"; else
    cargo build --release --locked --example http_load --example serve_bench -q
    export HTTP_LOAD="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/http_load"
    export SERVE_BENCH="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/serve_bench"
    export BENCH_PY="$(bash bench/venv.sh)"
    python3 bench/serve_http.py | tee bench/results/serve-http.md
  fi
fi
if want reindex; then
  if [[ ! -d "$BOOLQ" ]]; then echo "[bench] skipping reindex: BoolQ not found at $BOOLQ"; else
    cargo build --release --locked --example reindex_bench -q
    export REINDEX_BENCH="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/reindex_bench"
    python3 bench/reindex.py | tee bench/results/reindex.md
  fi
fi
if want train; then
  cargo build --release --locked -p coltrast-torch --example train_step_bench -q
  export TRAIN_EXAMPLE="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/train_step_bench"
  export BENCH_PY="$(bash bench/venv.sh)"
  python3 bench/train.py | tee bench/results/train.md
fi
# quality: both dev sets (ai_faq_dev_v3 and ai_faq_dev; a missing one is skipped), paired bootstrap intervals,
# learning curve and leave-projects-out (bench/quality.py; QUALITY_EXPERIMENTS="defaults curve ..." picks
# experiments). Runs under the bench venv: the analysis reads eval_queries.parquet with pyarrow and numpy.
if want quality; then
  export AI_FAQ_DEV_V3="${AI_FAQ_DEV_V3:-$(cd .. && pwd)/shared/data/ai_faq_dev_v3}"
  export AI_FAQ_DEV="${AI_FAQ_DEV:-$(cd .. && pwd)/shared/data/ai_faq_dev}"
  if [[ ! -d "$AI_FAQ_DEV_V3" && ! -d "$AI_FAQ_DEV" ]]; then echo "[bench] skipping quality: neither $AI_FAQ_DEV_V3 nor $AI_FAQ_DEV found (set AI_FAQ_DEV_V3=... / AI_FAQ_DEV=...)"; else
    cargo build --release --locked --example serve_bench -q
    export SERVE_BENCH="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/serve_bench"
    export BENCH_PY="$(bash bench/venv.sh)"
    "$BENCH_PY" bench/quality.py --selftest >&2
    # shellcheck disable=SC2086  # the experiment names are words
    "$BENCH_PY" bench/quality.py ${QUALITY_EXPERIMENTS:-} | tee bench/results/quality.md
  fi
fi
# mpnet: all-mpnet-base-v2 (make setup MODELS="all-MiniLM-L6-v2 all-mpnet-base-v2") against sentence-transformers'
# MPNet: embedding throughput and cosines (float32, int8, Python onnxruntime on the export), the train step against
# PyTorch eager at batch 8, and quality on ai_faq_dev (base and ColTrast-tuned, 3 seeds) next to MiniLM's defaults.
# MPNET_SECTIONS=speed,train,quality selects parts (the quality part trains 6 models: hours on 2 cores).
if want mpnet; then
  MPNET_DIR="$CACHE/models/all-mpnet-base-v2"
  if [[ ! -f "$MPNET_DIR/model.safetensors" ]]; then echo "[bench] skipping mpnet: not installed (make setup MODELS=\"all-MiniLM-L6-v2 all-mpnet-base-v2\")"; else
    parts=",${MPNET_SECTIONS:-speed,train,quality},"
    cargo build --release --locked --example serve_bench -q
    cargo build --release --locked -p coltrast-torch --example train_step_bench -q
    export SERVE_BENCH="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/serve_bench"
    export TRAIN_EXAMPLE="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/train_step_bench"
    export BENCH_PY="$(bash bench/venv.sh)"
    if [[ $parts == *,speed,* ]]; then
      if [[ ! -d "$BOOLQ" ]]; then echo "[bench] skipping mpnet speed: BoolQ not found at $BOOLQ"; else
        MODEL_DIR="$MPNET_DIR" SERVE_SECTIONS=throughput ORT_N="${MPNET_N:-200}" python3 bench/serve.py | tee bench/results/mpnet-embed.md
      fi
    fi
    if [[ $parts == *,train,* ]]; then
      MODEL_DIR="$MPNET_DIR" TRAIN_SECTIONS=speed python3 bench/train.py | tee bench/results/mpnet-train.md
    fi
    if [[ $parts == *,quality,* && ( -d "${AI_FAQ_DEV:-../shared/data/ai_faq_dev}" || -d "${AI_FAQ_DEV_V3:-../shared/data/ai_faq_dev_v3}" ) ]]; then
      "$BENCH_PY" bench/quality.py defaults mpnet | tee bench/results/quality-mpnet.md
    fi
  fi
fi
if want ray; then
  RAY_VENV="$CACHE/ray-venv"
  if [[ ! -d "$BOOLQ" ]]; then echo "[bench] skipping ray: BoolQ not found at $BOOLQ";
  elif [[ ! -x "$RAY_VENV/bin/ray" ]]; then echo "[bench] skipping ray: Ray not installed (make setup RAY=1)";
  elif [[ $(id -u) -ne 0 ]]; then echo "[bench] skipping ray: the Ray cluster runs in a network namespace (needs root)";
  else
    cargo build --release --locked --bins --example ray_bench -q
    export RAY_BENCH="${CARGO_TARGET_DIR:-$CACHE/target}/release/examples/ray_bench" RAY_VENV
    python3 bench/ray.py | tee bench/results/ray.md
  fi
fi
