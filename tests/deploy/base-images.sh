#!/usr/bin/env bash
# Makes the two base images the Dockerfile's FROM lines name, without any image registry:
#   debian:bookworm-slim          a minimal Debian rootfs from deb.debian.org (debootstrap)
#   rust:<VERSION>-slim-bookworm  that rootfs + gcc and libc6-dev + this host's Rust toolchain
#                                 (and the host's extra CAs, for crates.io behind a TLS proxy)
# <VERSION> is the host's rustc (major.minor), printed on stdout for `--build-arg RUST_VERSION`.
# An image that already exists is kept (delete it to rebuild). Needs root, docker, debootstrap.
set -euo pipefail
cd "$(dirname "$0")"
slim=debian:bookworm-slim
rust_version=$(rustc --version | awk '{print $2}' | cut -d. -f1,2)
builder=rust:${rust_version}-slim-bookworm

if ! docker image inspect "$slim" >/dev/null 2>&1; then
  echo "base-images: debootstrap bookworm for $slim" >&2
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  # What the official slim image leaves out: apt's lists and caches, documentation.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$slim" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

if ! docker image inspect "$builder" >/dev/null 2>&1; then
  echo "base-images: $builder from $slim and $(rustc --version)" >&2
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  sysroot=$(rustc --print sysroot)
  mkdir -p "$context/toolchain/bin"
  cp "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$sysroot/bin/rustdoc" "$context/toolchain/bin/"
  # The compiler's libraries and the standard library for this target; no sources, no docs.
  cp -a "$sysroot/lib" "$context/toolchain/"
  rm -rf "$context/toolchain/lib/rustlib/src" "$context/toolchain/lib/rustlib/rust-analyzer"*
  mkdir -p "$context/extra-ca"
  cp /usr/local/share/ca-certificates/*.crt "$context/extra-ca/" 2>/dev/null || true
  cp rust-builder.Dockerfile "$context/Dockerfile"
  docker build --network host -q -t "$builder" "$context" >/dev/null
  rm -rf "$context"
  trap - EXIT
fi
echo "$rust_version"
