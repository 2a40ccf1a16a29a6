#!/usr/bin/env bash
# bench/ab.sh — two specd server configurations, A and B, on one workload,
# alternated round by round (A B, B A, A B, ...) so that drift on the host
# hits both. Each round starts `specd serve` with A's flags, measures it with
# `specd bench --json` and stops it, then the same for B. Prints every
# round's output tok/s and B / A: the geometric mean of the per-round
# ratios with a 90 % interval (an interval holding 1 does not tell the two
# apart). For tuning by experiment: a thread setting, k, min_gain, a draft;
# or for a code change: the same flags on two builds (--a-bin, --b-bin).
#
# usage: bench/ab.sh [--rounds N] [--out DIR] --a "SERVE FLAGS" --b "SERVE FLAGS"
#                    [--a-env "K=V ..."] [--b-env "K=V ..."]
#                    [--a-bin SPECD] [--b-bin SPECD] -- BENCH FLAGS...
#
# SERVE FLAGS: everything `specd serve` needs but --host and --port (the
# model, the draft, threads, ...). --a-env / --b-env: environment for that
# server only (like GOMAXPROCS=1). --a-bin / --b-bin: that server's specd
# binary (default $SPECD; the client is always $SPECD). BENCH FLAGS:
# `specd bench` flags but --url and --json (concurrency, requests, token
# counts, --warmup, --sweep-k K to send a k with every request). Default 8 rounds; results in DIR (default
# .cache/bench/ab-<time>): rN.A.json, rN.B.json and the servers' logs.
#
# Environment: SPECD (binary, default bin/specd, built by `make build`),
# PORT (default 18181), SPECD_LIB_DIR (the backend, as for specd serve).
#
# Example: adaptive k against a fixed k = 3 on the benchmark pair, one stream
#   bench/ab.sh --a "--model .cache/models/heavy-q8.gguf --draft ../shared/models/stories260K.gguf --ctx-size 512 --parallel 1 --spec-k 3" \
#               --b "--model .cache/models/heavy-q8.gguf --draft ../shared/models/stories260K.gguf --ctx-size 512 --parallel 1" \
#               -- --concurrency 1 --requests 16 --input-tokens 64 --output-tokens 128 --warmup 1
# A code change: git worktree add /tmp/old HEAD~1 && make -C /tmp/old build, then
#   bench/ab.sh --a-bin /tmp/old/bin/specd --a "FLAGS" --b "FLAGS" -- ...
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
die() { echo "ab.sh: $*" >&2; exit 1; }

ROUNDS=8
OUT=""
A="" B="" AENV="" BENV="" ABIN="" BBIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --a) A="$2"; shift 2 ;;
    --b) B="$2"; shift 2 ;;
    --a-env) AENV="$2"; shift 2 ;;
    --b-env) BENV="$2"; shift 2 ;;
    --a-bin) ABIN="$2"; shift 2 ;;
    --b-bin) BBIN="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) die "unknown flag $1 (bench flags go after --)" ;;
  esac
done
[ -n "$A" ] && [ -n "$B" ] || die "needs --a and --b (see --help)"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds $ROUNDS: want a positive integer"
for t in jq curl awk; do command -v "$t" >/dev/null || die "needs $t"; done

SPECD="${SPECD:-$root/bin/specd}"
PORT="${PORT:-18181}"
if [ "$SPECD" = "$root/bin/specd" ]; then make -C "$root" build >/dev/null; fi
[ -x "$SPECD" ] || die "no specd binary at $SPECD"
ABIN="${ABIN:-$SPECD}" BBIN="${BBIN:-$SPECD}"
for b in "$ABIN" "$BBIN"; do [ -x "$b" ] || die "no specd binary at $b"; done
OUT="${OUT:-$root/.cache/bench/ab-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
url="http://127.0.0.1:$PORT"
if curl -s -o /dev/null "$url/health"; then die "port $PORT is already in use"; fi

pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# measure SIDE ROUND BENCHFLAGS...: start SIDE's server, run the client,
# stop the server; sets tok[SIDE] to the output tok/s.
measure() {
  local side="$1" r="$2" flags envs bin
  shift 2
  if [ "$side" = A ]; then flags="$A" envs="$AENV" bin="$ABIN"; else flags="$B" envs="$BENV" bin="$BBIN"; fi
  # shellcheck disable=SC2086 # the flag strings are word lists
  env $envs "$bin" serve $flags --host 127.0.0.1 --port "$PORT" >"$OUT/r$r.$side.log" 2>&1 &
  pid=$!
  if ! wait_ready "$url" "$pid"; then
    tail -5 "$OUT/r$r.$side.log" >&2
    die "server $side did not become ready; log: $OUT/r$r.$side.log"
  fi
  "$SPECD" bench --url "$url" --json --no-progress "$@" >"$OUT/r$r.$side.json" 2>"$OUT/r$r.$side.err" ||
    die "specd bench failed against $side: $(tail -1 "$OUT/r$r.$side.err")"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  tok[$side]="$(jq -r '.points[0].summary.output_throughput' "$OUT/r$r.$side.json")"
}

: >"$OUT/pairs.txt"
declare -A tok=()
echo "A: $AENV $ABIN serve $A"
echo "B: $BENV $BBIN serve $B"
echo "client: specd bench $*"
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then order="A B"; else order="B A"; fi
  for side in $order; do measure "$side" "$r" "$@"; done
  printf 'round %d: A %.1f  B %.1f tok/s\n' "$r" "${tok[A]}" "${tok[B]}"
  echo "${tok[B]} ${tok[A]}" >>"$OUT/pairs.txt"
done
echo "B / A output tok/s over $ROUNDS rounds: $(ratio_ci <"$OUT/pairs.txt")  (results in $OUT)"
