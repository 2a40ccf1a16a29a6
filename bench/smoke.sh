#!/usr/bin/env bash
# bench/smoke.sh — a ~10 s smoke test of `specd bench` against `specd serve`
# on stories260K: starts the server on 127.0.0.1, runs a short load, and
# checks that the report is produced and sane (requests completed, none
# failed, non-zero throughput, every request made its max_tokens, TTFT and
# latency positive and ordered). Exit 0 = pass.
#
# usage: bench/smoke.sh [SPECD_BIN [MODEL]]
#        bench/smoke.sh --url http://127.0.0.1:PORT [SPECD_BIN]   (bench a running server; no serve)
# env:   SPECD (binary, default bin/specd), MODEL (default ../shared/models/stories260K.gguf),
#        PORT (default 18190), DURATION (default 5s), SPECD_LIB_DIR, THREADS (default 2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
URL=""
if [ "${1:-}" = --url ]; then URL="$2"; shift 2; fi
SPECD="${1:-${SPECD:-$root/bin/specd}}"
MODEL="${2:-${MODEL:-$root/../shared/models/stories260K.gguf}}"
PORT="${PORT:-18190}"
DURATION="${DURATION:-5s}"
THREADS="${THREADS:-2}"
OUTTOK=24
export GGML_NO_BACKTRACE=1
export SPECD_LIB_DIR="${SPECD_LIB_DIR:-$root/.cache/backend/linux-x64-3.22.1}"
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "smoke: FAIL: $*" >&2; [ -f "$tmp/serve.log" ] && tail -20 "$tmp/serve.log" >&2; exit 1; }

[ -x "$SPECD" ] || fail "no specd binary at $SPECD (make build)"
if [ -z "$URL" ]; then
  [ -f "$MODEL" ] || fail "no model at $MODEL"
  URL="http://127.0.0.1:$PORT"
  curl -s -o /dev/null "$URL/health" && fail "port $PORT is already in use"
  "$SPECD" serve --model "$MODEL" --host 127.0.0.1 --port "$PORT" --ctx-size 2048 --parallel 4 \
    --threads "$THREADS" >"$tmp/serve.log" 2>&1 &
  pid=$!
  ready=0
  for _ in $(seq 1 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ]; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || fail "specd serve exited during start-up"
    sleep 0.1
  done
  [ "$ready" = 1 ] || fail "specd serve not ready after 30 s"
fi

"$SPECD" bench --url "$URL" --concurrency 4 --duration "$DURATION" --input-tokens 32 \
  --output-tokens "$OUTTOK" --json --no-progress >"$tmp/report.json" 2>"$tmp/bench.err" ||
  fail "specd bench exited non-zero: $(tail -3 "$tmp/bench.err")"

# Field reader: jq when present, else the indented JSON `specd bench --json`
# writes (the first occurrence of a key is the first point's).
field() {
  if command -v jq >/dev/null; then jq -r ".points[0].summary.$1" "$tmp/report.json"
  else
    local key="${1##*.}" parent=""
    [ "$key" != "$1" ] && parent="${1%%.*}"
    if [ -n "$parent" ]; then
      sed -n "/\"$parent\": {/,/}/p" "$tmp/report.json" | sed -n "s/^ *\"$key\": \([-0-9.e+]*\).*/\1/p" | head -1
    else
      sed -n "s/^ *\"$key\": \([-0-9.e+]*\).*/\1/p" "$tmp/report.json" | head -1
    fi
  fi
}
completed="$(field completed)"; failed="$(field failed)"
otps="$(field output_throughput)"; out="$(field total_output_tokens)"
ttft="$(field ttft_ms.p50)"; e2e="$(field e2el_ms.p50)"
echo "smoke: completed=$completed failed=$failed output_tok/s=$otps out_tokens=$out ttft_p50=${ttft}ms e2e_p50=${e2e}ms"
awk -v c="$completed" -v f="$failed" -v t="$otps" -v o="$out" -v n="$OUTTOK" -v ttft="$ttft" -v e="$e2e" 'BEGIN {
  if (c + 0 < 4)         { print "fewer than 4 requests completed"; exit 1 }
  if (f + 0 != 0)        { print f " requests failed"; exit 1 }
  if (t + 0 <= 0)        { print "zero output throughput"; exit 1 }
  if (o + 0 != c * n)    { print "output tokens " o " != completed × max_tokens " c * n; exit 1 }
  if (ttft + 0 <= 0 || e + 0 < ttft + 0) { print "TTFT/latency not positive and ordered"; exit 1 }
}' >&2 || fail "report is not sane"
echo "smoke: PASS"
