#!/usr/bin/env bash
# Builds llama.cpp's own tools from the pinned tree into .cache/llama-build
# (Release, CPU, shared libs). Takes ~5-10 min on 2 cores the first time.
# Usage: scripts/build-llama-tools.sh [targets...]  (default: llama-server llama-bench llama-completion)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SPECD_CACHE:-$root/.cache}"
"$root/scripts/fetch-llama-src.sh" >/dev/null
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(llama-server llama-bench llama-completion)
build="$cache/llama-build"
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$cache/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >/dev/null
echo "llama.cpp tools: $build/bin"
