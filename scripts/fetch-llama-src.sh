#!/usr/bin/env bash
# Clones the llama.cpp tree that matches the pinned backend (the git bundle inside
# the npm package node-llama-cpp@3.22.1) into .cache/llama.cpp. Idempotent.
# Used to build llama.cpp's own tools (llama-server, llama-bench, llama-completion)
# as benchmark peers and references; never vendored into this repo.
set -euo pipefail
VERSION="3.22.1"
SHA256="a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SPECD_CACHE:-$root/.cache}"
src="$cache/llama.cpp"
if [ -f "$src/include/llama.h" ]; then echo "llama.cpp source: $src"; exit 0; fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent "node-llama-cpp@$VERSION" >/dev/null )
tgz="$(ls "$tmp"/*.tgz)"
got="$(sha256sum "$tgz" | cut -d' ' -f1)"
[ "$got" = "$SHA256" ] || { echo "fetch-llama-src: sha256 mismatch: got $got, want $SHA256" >&2; exit 1; }
tar xzf "$tgz" -C "$tmp" package/llama/gitRelease.bundle
mkdir -p "$cache"
git clone -q "$tmp/package/llama/gitRelease.bundle" "$src" 2>/dev/null
echo "llama.cpp source: $src"
