# coltrast: the two commands a new user types are `make pipeline` and `make test`.
# Both run `make setup` first when it has not been done (a stamp in the cache makes it a fast no-op).

SHELL := /bin/bash
export COLTRAST_CACHE ?= $(HOME)/.cache/coltrast
export CARGO_TARGET_DIR ?= $(COLTRAST_CACHE)/target
export LIBTORCH ?= $(COLTRAST_CACHE)/libtorch
# libtorch_cpu needs libcudart/libcupti from the lean venv even on CPU; the rpath of torch's libs finds them.

# GPU=1: setup also installs the CUDA wheels and ONNX Runtime's CUDA provider, and the build links libtorch_cuda
# (cargo feature coltrast-torch/cuda). Unset (or 0): the CPU-only default.
GPU ?=
export GPU
CUDA := $(filter-out 0,$(GPU))
CARGO_FEATURES := $(if $(CUDA),--features coltrast-torch/cuda,)
# The binaries are rebuilt when GPU changes: this file holds the features of the last build.
FEATURES_FILE := $(CARGO_TARGET_DIR)/coltrast-features
$(shell mkdir -p '$(CARGO_TARGET_DIR)' && { echo '$(CARGO_FEATURES)' | cmp -s - '$(FEATURES_FILE)' || echo '$(CARGO_FEATURES)' > '$(FEATURES_FILE)'; })

# MODELS: the base models setup installs, by their names under $(COLTRAST_CACHE)/models, which `model.base`
# accepts: all-MiniLM-L6-v2 (the default base, always installed) and all-mpnet-base-v2 (~440 MB; installed by
# default as the teacher of train.teacher = "auto"; MODELS=all-MiniLM-L6-v2 leaves it out), and
# SmolLM2-135M-Instruct, the language model of generate.sources = ["llm"] (on request, ~98 MB GGUF file).
# `make test` installs all three unless MODELS is given, so that the MPNet parity and SmolLM2 tests run (they
# skip without them).
MODELS ?=
export MODELS
TEST_MODELS := $(or $(MODELS),all-MiniLM-L6-v2 all-mpnet-base-v2 SmolLM2-135M-Instruct)

# Two binaries: coltrast (no libtorch: starts in milliseconds) and coltrast-torch (the same CLI with libtorch),
# which coltrast hands every run that must train or embed with libtorch.
BIN := $(CARGO_TARGET_DIR)/release/coltrast
SOURCES := $(shell find src torch/src -name '*.rs' 2>/dev/null) Cargo.toml torch/Cargo.toml Cargo.lock build.rs torch/build.rs
ARGS ?=

.PHONY: setup pipeline test bench build status clean-artifacts gpu-check docs

## setup: system packages, lean libtorch, libonnxruntime and the base model, into $(COLTRAST_CACHE)
##        (GPU=1: also the CUDA wheels and onnxruntime-gpu; MODELS="all-MiniLM-L6-v2 all-mpnet-base-v2": MPNet too)
##        (RAY=1: also a venv with ray 2.60.0 and the Ray driver python/coltrast_ray, for executor.kind = "ray")
RAY ?=
setup:
	@RAY=$(RAY) bash scripts/setup.sh

## build: the release binaries (only when sources changed)
build: setup $(BIN)

$(BIN): $(SOURCES) $(FEATURES_FILE)
	cargo build --release --locked --workspace --bins $(CARGO_FEATURES)
	@touch $@

## pipeline: run every stage of pipeline.toml (cached stages are skipped)
pipeline: setup $(BIN)
	@$(BIN) run $(ARGS)

## status: which stages are up to date, and why the others would run
status: setup $(BIN)
	@$(BIN) status

## test: the whole test suite (setup also installs Chromium, for the browser test of the search page)
test:
	@BROWSER=1 RAY=$(RAY) MODELS="$(TEST_MODELS)" bash scripts/setup.sh
	cargo test --release --locked --workspace $(CARGO_FEATURES)

## bench: benchmarks (creates a separate Python venv for the baselines on first use)
bench: setup $(BIN)
	@bash bench/run.sh

## docs: regenerate docs/settings.md and the commented pipeline.toml from src/settings.rs (its types and doc
##       comments); `make test` fails when they are stale
docs: setup
	COLTRAST_WRITE_DOCS=1 cargo test --release --locked --test settings_reference $(CARGO_FEATURES)

clean-artifacts:
	rm -rf artifacts

## gpu-check: on a GPU machine, CUDA against CPU for training and embedding; writes bench/results/gpu.md
gpu-check:
	@bash scripts/gpu_check.sh $(ARGS)
