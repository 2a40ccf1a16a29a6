#!/usr/bin/env bash
# bench/bound1.sh — how far one stream can go: specd and llama-server at
# concurrency 1 (scenario 1's servers: same model, threads, context, slots,
# flash attention off, same native build), each round followed by
# llama-bench on the same model. A request of P prompt and N output tokens
# cannot take less than the backend's own prefill of P tokens plus N - 1
# one-token decodes, each at the faster of 1 and T threads (llama-bench
# pp P and tg N). Per round that gives:
#   specd / llama-server     output tok/s, as compare.sh measures it
#   bound / llama-server     a server with no cost beyond llama_decode
#                            (llama-server's request time / the backend's)
#   specd / bound            the share of the backend's speed specd reaches
# each as the geometric mean over rounds with its 90 % interval. The servers
# stay up; their order flips every round.
#
# usage: bench/bound1.sh [--rounds N] [--model M] [--threads T] [--requests R]
#                        [--input-tokens P] [--output-tokens N] [--out DIR]
#
# Environment: LLAMA_BIN (folder with llama-server and llama-bench, default
# .cache/llama-build/bin, built by scripts/build-llama-tools.sh), SPECD
# (default bin/specd, built by `make build`), PORT_SPECD / PORT_LLAMA
# (default 18181 / 18182). specd loads LLAMA_BIN's libraries.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
die() { echo "bound1.sh: $*" >&2; exit 1; }

ROUNDS=8 MODEL="$root/../shared/models/stories260K.gguf" THREADS="$(nproc)"
REQS=64 PIN=128 NOUT=128 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --requests) REQS="$2"; shift 2 ;;
    --input-tokens) PIN="$2"; shift 2 ;;
    --output-tokens) NOUT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) die "unknown flag $1 (see --help)" ;;
  esac
done
for v in ROUNDS THREADS REQS PIN NOUT; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "${v,,} ${!v}: want a positive integer"
done
for t in jq curl awk; do command -v "$t" >/dev/null || die "needs $t"; done
LLAMA_BIN="${LLAMA_BIN:-$root/.cache/llama-build/bin}"
for b in llama-server llama-bench; do
  [ -x "$LLAMA_BIN/$b" ] || die "no $b in $LLAMA_BIN (scripts/build-llama-tools.sh, or set LLAMA_BIN)"
done
[ -f "$MODEL" ] || die "no model at $MODEL"
SPECD="${SPECD:-$root/bin/specd}"
if [ "$SPECD" = "$root/bin/specd" ]; then make -C "$root" build >/dev/null; fi
[ -x "$SPECD" ] || die "no specd binary at $SPECD"
PORT_SPECD="${PORT_SPECD:-18181}" PORT_LLAMA="${PORT_LLAMA:-18182}"
OUT="${OUT:-$root/.cache/bench/bound1-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Scenario 1's shape: 32 slots of 384 cells.
np=32 ctx=$((32 * 384))
start() { # NAME PORT CMD...
  local name="$1" port="$2"; shift 2
  if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then die "port $port is already in use"; fi
  "$@" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$port" "${pids[-1]}" && return 0
  tail -5 "$OUT/$name.log" >&2
  die "$name did not become ready; log: $OUT/$name.log"
}
start specd "$PORT_SPECD" env SPECD_LIB_DIR="$LLAMA_BIN" "$SPECD" serve --model "$MODEL" --host 127.0.0.1 --port "$PORT_SPECD" \
  --ctx-size "$ctx" --parallel "$np" --threads "$THREADS" --flash-attn off --proposer none
start llama "$PORT_LLAMA" "$LLAMA_BIN/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$PORT_LLAMA" \
  -c "$ctx" -np "$np" -t "$THREADS" -fa off --no-cache-prompt

# Tokens per word, once, so that both servers get the same prompts.
tpw="$("$SPECD" bench --url "http://127.0.0.1:$PORT_LLAMA" --json --no-progress --requests 1 --input-tokens 64 --output-tokens 1 |
  jq -r '.workload.tokens_per_word')"
point() { # PORT SEED FILE: output tok/s at concurrency 1
  "$SPECD" bench --url "http://127.0.0.1:$1" --json --no-progress --tokens-per-word "$tpw" --seed "$2" --concurrency 1 \
    --requests "$REQS" --input-tokens "$PIN" --output-tokens "$NOUT" --warmup 2 >"$3" ||
    die "specd bench failed against port $1"
  jq -r '.points[0].summary.output_throughput' "$3"
}

: >"$OUT/rounds.txt"
echo "model $MODEL, $THREADS threads, $REQS requests of $PIN + $NOUT tokens per point"
for r in $(seq 1 "$ROUNDS"); do
  seed=$((r * 1000 + 1))
  if (( r % 2 )); then
    l="$(point "$PORT_LLAMA" $seed "$OUT/r$r.llama.json")"; s="$(point "$PORT_SPECD" $seed "$OUT/r$r.specd.json")"
  else
    s="$(point "$PORT_SPECD" $seed "$OUT/r$r.specd.json")"; l="$(point "$PORT_LLAMA" $seed "$OUT/r$r.llama.json")"
  fi
  # Thread counts 1 and T; the faster of each phase.
  "$LLAMA_BIN/llama-bench" -m "$MODEL" -t "1,$THREADS" -p "$PIN" -n "$NOUT" -fa 0 -r 5 -o json >"$OUT/r$r.llama-bench.json" 2>/dev/null ||
    die "llama-bench failed"
  read -r pp tg < <(jq -r '[ (map(select(.n_prompt > 0) | .avg_ts) | max), (map(select(.n_gen > 0) | .avg_ts) | max) ] | @tsv' "$OUT/r$r.llama-bench.json")
  # Seconds per request: served (from output tok/s) and the backend's own.
  awk -v s="$s" -v l="$l" -v pp="$pp" -v tg="$tg" -v p="$PIN" -v n="$NOUT" -v r="$r" 'BEGIN {
    raw = p / pp + (n - 1) / tg
    printf "round %d: specd %.1f  llama-server %.1f tok/s; backend: prefill %.1f ms, decode %.3f ms/token, bound %.1f tok/s\n", r, s, l, 1000 * p / pp, 1000 / tg, n / raw
    printf "%s %s %.6f %.6f %.6f\n", s, l, n / raw, n / s, n / l >"/dev/stderr" }' 2>>"$OUT/rounds.txt"
done
# rounds.txt: specd llama bound (tok/s) and the two request times.
echo "specd / llama-server:  $(awk '{print $1, $2}' "$OUT/rounds.txt" | ratio_ci)"
echo "bound / llama-server:  $(awk '{print $3, $2}' "$OUT/rounds.txt" | ratio_ci)"
echo "specd / bound:         $(awk '{print $1, $3}' "$OUT/rounds.txt" | ratio_ci)  (results in $OUT)"
