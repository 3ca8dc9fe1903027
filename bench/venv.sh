#!/usr/bin/env bash
# The Python venv for benchmark baselines (full torch 2.11 + sentence-transformers, ~4.6 GB from PyPI; FastAPI,
# uvicorn and the openai client for the HTTP peer and the OpenAI-compatibility test).
# Created on first use by `make bench`, never by `make setup`; the pipeline and the tests never need it.
# Prints the venv's python path.
set -euo pipefail
CACHE="${COLTRAST_CACHE:-$HOME/.cache/coltrast}"
VENV="$CACHE/bench-venv"
if [[ ! -f "$VENV/.done-1" ]]; then
  echo "[bench] creating $VENV (torch 2.11.0 + sentence-transformers; ~4.6 GB, once)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.11.0 sentence-transformers onnxruntime==1.31.1 faiss-cpu >&2
  touch "$VENV/.done-1"
fi
if [[ ! -f "$VENV/.done-2" ]]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check fastapi uvicorn openai pyarrow >&2
  touch "$VENV/.done-2"
fi
# The CPU race's peers (bench/cpu_race.py): sentence-transformers' ONNX and OpenVINO backends and OpenVINO static
# int8: sentence-transformers' own `onnx` and `openvino` extras and datasets (the calibration set), with torch and
# onnxruntime held at the versions above. sentence-transformers 6's `onnx` extra (optimum-onnx) needs
# transformers < 4.58 while 6 needs >= 5, so both extras resolve together only at 5.7.0 (optimum-intel 1.27,
# openvino 2026.4, transformers 4.57): pinned, so every run races the same peers.
if [[ ! -f "$VENV/.done-3" ]]; then
  echo "[bench] adding OpenVINO and optimum to $VENV (the CPU race's peers)" >&2
  printf 'torch==2.11.0\nonnxruntime==1.31.1\n' > "$VENV/constraints.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check -c "$VENV/constraints.txt" \
    "sentence-transformers[onnx,openvino]==5.7.0" datasets >&2
  touch "$VENV/.done-3"
fi
echo "$VENV/bin/python"
