#!/usr/bin/env bash
# Makes the base image the Containerfile starts from (debian:bookworm-slim) on a host that reaches
# Debian's packages but no image registry: debootstrap of bookworm from the host's own Debian mirror,
# trimmed like the official slim image, imported under that tag. Does nothing when the tag exists
# (pulled or made earlier). Needs root and debootstrap. Elsewhere `podman pull` / `docker pull`
# gives the official image and this script is not needed.
#   scripts/base_image.sh [TAG]     PODMAN=... picks the podman command (default scripts/podman.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-debian:bookworm-slim}
podman=${PODMAN:-$here/podman.sh}

if $podman image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag: present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

# The host's Debian mirror: the first URIs of a deb822 stanza for bookworm (not -security), else a
# one-line `deb URL bookworm` entry, else Debian's own.
mirror=$(awk '/^URIs:/{u=$2} /^Suites:.*bookworm( |$)/{if (u !~ /security/) {print u; exit}} /^$/{u=""}' \
  /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3=="bookworm"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
security=$(awk '/^URIs:/{u=$2} /^Suites:.*bookworm-security/{print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
security=${security:-http://deb.debian.org/debian-security}

work=$(mktemp -d "${TMPDIR:-/tmp}/dmeta-embed-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
echo "debootstrap bookworm from $mirror into $root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

# What the official slim image does: no docs, man pages or locales from later installs, apt's
# caches cleaned after each install, the same package sources.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CFG
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<CFG
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
  "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* "$root"/debootstrap

tar --numeric-owner -C "$root" -c . | $podman import --quiet --change 'CMD ["bash"]' - "$tag" >/dev/null
echo "base image $tag: made"
