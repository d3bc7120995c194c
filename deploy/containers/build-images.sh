#!/usr/bin/env bash
# Builds the cookiefs images from a Debian 12 base with binaries built by CMake:
#   build-images.sh BIN_DIR [IMAGE...]
# BIN_DIR holds storage-service, cookiefs and cookiefs-shim (e.g. the bin/ of
# `cmake --install build --prefix P`). IMAGE: storage, sidecar, engine-demo,
# postgres-eval (default: all). Tags: localhost/cookiefs-<image>:latest.
# The base localhost/debian:bookworm-minbase is imported from a debootstrap
# tarball, cached in COOKIEFS_CI_CACHE (/var/cache/cookiefs-ci). PODMAN may
# name another podman command line (e.g. with --root/--runroot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:?usage: build-images.sh BIN_DIR [storage|sidecar|engine-demo|postgres-eval ...]}
shift
images=("$@"); [[ ${#images[@]} -gt 0 ]] || images=(storage sidecar engine-demo postgres-eval)
podman=(${PODMAN:-podman})
cache=${COOKIEFS_CI_CACHE:-/var/cache/cookiefs-ci}
base=localhost/debian:bookworm-minbase
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! "${podman[@]}" image exists "$base"; then
  tarball=$cache/debian-bookworm-minbase.tar
  if [[ ! -s $tarball ]]; then
    echo "build-images: debootstrap bookworm (cached afterwards in $tarball)" >&2
    mkdir -p "$cache"
    root=$(mktemp -d "$cache/debootstrap.XXXXXX")
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
      || { tail -20 "$root.log" >&2; rm -rf "$root"; exit 1; }
    # Same archive for apt-get inside the images, with security updates.
    echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
    echo "deb $mirror bookworm-updates main" >>"$root/etc/apt/sources.list"
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root" "$root.log"
  fi
  "${podman[@]}" import "$tarball" "$base" >/dev/null
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here"/* "$ctx"/
mkdir -p "$ctx/bin"
for b in storage-service cookiefs cookiefs-shim; do
  [[ -x $bin/$b ]] && cp "$bin/$b" "$ctx/bin/"
done
for image in "${images[@]}"; do
  case $image in
    storage) file=storage-service.Containerfile; need=(storage-service) ;;
    sidecar) file=cookiefs-sidecar.Containerfile; need=(cookiefs cookiefs-shim) ;;
    engine-demo) file=engine-demo.Containerfile; need=() ;;
    postgres-eval) file=postgres-eval.Containerfile; need=() ;;
    *) echo "build-images: unknown image $image" >&2; exit 2 ;;
  esac
  for b in "${need[@]}"; do
    [[ -x $ctx/bin/$b ]] || { echo "build-images: $bin/$b is missing" >&2; exit 2; }
  done
  echo "build-images: localhost/cookiefs-$image:latest" >&2
  "${podman[@]}" build --quiet --build-arg BASE="$base" -t "localhost/cookiefs-$image:latest" \
    -f "$ctx/$file" "$ctx" >/dev/null
done
