#!/usr/bin/env bash
# podman as this project's build hosts need it; the Makefile's image targets call it
# (`make image CONTAINER=docker` uses docker as it is instead). The Containerfile itself
# stays portable: everything host-specific is here.
# - runc, not crun: crun refuses these hosts' cgroup layout ("cgroups in hybrid mode").
# - rlimits the sandbox lets a container have (scripts/containers.conf).
# - host networking for build and run, unless a run names its own network (podman's bridge
#   networks work here: make test-image-ray makes one, so each Ray node has its own IP as a pod).
# - build: Docker's image format (the OCI format drops HEALTHCHECK), and the host's pip
#   configuration passed in (index URLs and the CA bundle, for a TLS proxy, as build args; local
#   indexes and wheel folders mounted read-only at the same paths, the bundle at /opt/pip-ca.crt),
#   so pip inside the build resolves what pip on the host does;
#   where that configuration carries the CPU torch wheel, torch comes from it rather than from
#   download.pytorch.org.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
global=()
command -v runc >/dev/null && global+=(--runtime runc)

# one pip setting as the host resolves it (environment first, then pip's config files)
pip_setting() {
  local env=$1 key=$2 v=${!1:-}
  [ -n "$v" ] || v=$(python3 -m pip config get "global.$key" 2>/dev/null || true)
  printf '%s' "$v" | tr '\n' ' ' | sed 's/ *$//'
}

pip_build_args() {
  local index extra trusted links cert mounts=() path u
  index=$(pip_setting PIP_INDEX_URL index-url)
  extra=$(pip_setting PIP_EXTRA_INDEX_URL extra-index-url)
  trusted=$(pip_setting PIP_TRUSTED_HOST trusted-host)
  links=$(pip_setting PIP_FIND_LINKS find-links)
  cert=$(pip_setting PIP_CERT cert)
  # not at the host's path: a package inside the build may write its own bundle there
  [ -f "$cert" ] && mounts+=(--volume "$cert:/opt/pip-ca.crt:ro") && cert=/opt/pip-ca.crt || cert=
  for u in $index $extra $links; do
    path=${u#file://}
    [ "${path#/}" != "$path" ] && [ -e "$path" ] || continue
    # an index's simple/ pages point into its parent (../files/)
    [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
    mounts+=(--volume "$path:$path:ro")
  done
  printf '%s\n' --build-arg "PIP_INDEX_URL=$index" --build-arg "PIP_EXTRA_INDEX_URL=$extra" \
    --build-arg "PIP_TRUSTED_HOST=$trusted" --build-arg "PIP_FIND_LINKS=$links" \
    --build-arg "PIP_CERT=$cert" "${mounts[@]}"
  for u in $links; do
    if compgen -G "${u#file://}/torch-*+cpu-*.whl" >/dev/null; then
      printf '%s\n' --build-arg TORCH_INDEX_URL=
      break
    fi
  done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  build)
    mapfile -t pip_args < <(pip_build_args)
    exec podman "${global[@]}" build --network host --format docker "${pip_args[@]}" "$@" ;;
  run)
    # host networking unless the caller names a network (make test-image-ray: one of its own)
    net=(--network host)
    for a in "$@"; do case $a in --network | --network=* | --net | --net=*) net=() && break ;; esac; done
    exec podman "${global[@]}" run "${net[@]}" "$@" ;;
  *) exec podman "${global[@]}" $cmd "$@" ;;
esac
