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
echo "$VENV/bin/python"
