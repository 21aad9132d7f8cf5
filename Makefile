# make demo / make test do their own set-up: create .venv and install everything they use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install qemu demo test test-tf5 lint bench bench-openvino clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned to its CPU build: an unpinned torch (or one pulled in by another
	# package) would download a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	# the export extra allows transformers 4.44 to 5.x: this venv tests the 4.57 line (the bench's
	# optimum-intel needs < 4.58), .venv-tf5 (make test-tf5) the 5.x line
	$(BIN)/python -m pip install -q -e '.[cpu,openvino,export,export-openvino,dev,server,corpus,ray,langchain,llama-index,mteb]' 'transformers>=4.57,<4.58'
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

# The exporter on transformers 5.x (what GPU hosts ship: 5.17 with sentence-transformers 6): a
# second, small venv (CPU torch pinned first, no optimum, whose onnx exporter needs < 4.58) running
# the tiny-model export tests and the GPU check's CPU parts. ~3 min to build once, ~3 min to run on
# 2 cores; .ci/run calls it after `make test` when the 15-minute budget leaves room.
TF5_VENV  := .venv-tf5
TF5_STAMP := $(TF5_VENV)/.installed-stamp
TF5_TESTS ?= tests/test_export.py tests/test_export_errors.py tests/test_tf5_env.py

$(TF5_STAMP): pyproject.toml Makefile
	test -x $(TF5_VENV)/bin/python || $(PY) -m venv $(TF5_VENV)
	$(TF5_VENV)/bin/python -m pip install -q --upgrade pip
	$(TF5_VENV)/bin/python -m pip install -q torch==2.13.0
	$(TF5_VENV)/bin/python -m pip install -q -e '.[cpu,export]' 'transformers>=5,<6' 'sentence-transformers>=6,<7' 'pytest>=8'
	touch $(TF5_STAMP)

test-tf5: $(TF5_STAMP)
	DMETA_EXPECT_TRANSFORMERS=5 $(TF5_VENV)/bin/python -m pytest -q -p no:cacheprovider $(TF5_TESTS)

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
