#!/usr/bin/env bash
# Installs the prebuilt llama.cpp backend (npm package @node-llama-cpp/linux-x64)
# into a git-ignored folder, checking the tarball against a pinned sha256.
# Idempotent: once installed, it touches no network.
set -euo pipefail

PKG="@node-llama-cpp/linux-x64"
VERSION="3.22.1"
SHA256="0d953e1503d5ab4608d8ed5b739132308c81ac05ffeb760d2a7f30e08a9f90e0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${SPECD_BACKEND_DIR:-$root/.cache/backend}"
libdir="$dest/linux-x64-$VERSION"
stamp="$libdir/.installed-$SHA256"

if [ -f "$stamp" ]; then
  echo "backend: $libdir (already installed)"
  exit 0
fi

command -v npm >/dev/null || { echo "install-backend: npm not found (apt-get install npm)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent "$PKG@$VERSION" >/dev/null )
tgz="$(ls "$tmp"/*.tgz)"
got="$(sha256sum "$tgz" | cut -d' ' -f1)"
if [ "$got" != "$SHA256" ]; then
  echo "install-backend: sha256 mismatch for $PKG@$VERSION: got $got, want $SHA256" >&2
  exit 1
fi
mkdir -p "$tmp/x"
tar xzf "$tgz" -C "$tmp/x"
rm -rf "$libdir"
mkdir -p "$libdir"
cp "$tmp"/x/package/bins/linux-x64/*.so "$libdir/"
touch "$stamp"
echo "backend: $libdir"
