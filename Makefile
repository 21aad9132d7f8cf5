# make demo / make test do their own set-up: create .venv and install everything they use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install qemu demo test lint bench bench-openvino clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned to its CPU build: an unpinned torch (or one pulled in by another
	# package) would download a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[cpu,openvino,export,export-openvino,dev,server,corpus,ray,langchain,llama-index,mteb]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python scripts/demo.py

# tests/test_int8_shift.py runs onnxruntime's AVX2 int8 kernels under qemu-x86_64 -cpu Haswell,
# whatever CPU this is; qemu-user comes from the system's packages (skipped, with a reason, where
# it cannot be installed: not root, no apt, not x86_64)
qemu:
	@command -v qemu-x86_64 >/dev/null || { [ "$$(uname -m)" = x86_64 ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user) >/dev/null 2>&1; } \
		|| echo "qemu-user not installed: the AVX2 emulation tests will be skipped"

test: install qemu
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check dmeta_embed tests benchmarks scripts
	$(BIN)/ruff format --check dmeta_embed tests benchmarks scripts
	$(BIN)/mypy dmeta_embed/runtime dmeta_embed/manifest.py dmeta_embed/errors.py

# the recorded benchmark (README, "Performance"): installs the peers, builds and exports the
# Dmeta-shaped model once, then measures every system (~35 minutes on 2 cores)
# results are kept per CPU class (amx, avx512_vnni, avx2, ...): the engines run other kernels on each
CPU_CLASS = $(shell $(BIN)/python -c "from dmeta_embed.runtime.cpu import detect; print(detect().cpu_class.value)" 2>/dev/null)

bench: install
	$(BIN)/python -m pip install -q -e '.[cpu,export,export-openvino,dev,server,bench]'
	test -f out/dmeta-shaped/model.int8-ov.onnx || $(BIN)/python -m benchmarks.build_dmeta_shaped --force
	$(BIN)/python -m benchmarks --model out/dmeta-shaped --peers --passes 2 --output benchmarks/results/dmeta-shaped/$(CPU_CLASS)

# OpenVINO configurations (f32/bf16, static/weights-only int8) on our graphs beside our int8 (benchmarks/openvino_ep.py, ~10 min)
bench-openvino: install
	$(BIN)/python -m pip install -q -e '.[cpu,export,export-openvino,dev,server,bench]'
	test -f out/dmeta-shaped/model.int8-ov.onnx || $(BIN)/python -m benchmarks.build_dmeta_shaped --force
	$(BIN)/python -m benchmarks.openvino_ep --output benchmarks/results/dmeta-shaped/$(CPU_CLASS)

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
