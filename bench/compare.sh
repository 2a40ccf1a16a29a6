#!/usr/bin/env bash
# bench/compare.sh — specd against llama-server on the same model files,
# threads, context, slots and flash-attention setting, measured by the same
# client (`specd bench --json`). Every figure is the median of --runs runs
# (default 3) with min and max; within each run the two servers take turns
# point by point, the order flipping every run, so drift hits both sides.
# Writes a generated section of docs/BENCHMARKS.md (between markers).
#
# usage: bench/compare.sh [--scenario LIST|all] [--runs N] [--quick]
#                         [--sides specd,llama] [--threads T] [--out DIR]
#                         [--concs LIST]
#                         [--same-backend] [--doc | --no-doc]
#        bench/compare.sh --report DIR [same flags]   (redo the tables from DIR's raw results)
#
# Scenarios (LIST like 1,3):
#   1  stories260K, no speculation, concurrency 1/4/16/32
#   2  heavy target + stories260K draft, draft speculation k=4 on both, c 1/4/16
#   3  heavy target, n-gram speculation on both, copy-heavy prompts (bench/copy.jsonl)
#   4  heavy target, long shared-prefix prompts, prefix caching on both sides
#   5  k sweep 0..8 on specd (heavy + stories260K draft), temperature 0 and 0.8;
#      llama-server at each k (one start per k), temperature 0
#   6  heavy target + stories260K draft, specd's adaptive k against specd
#      without speculation (same server, per-request proposer none) and
#      llama-server without speculation, c 1/4/16
#   7  stories260K, structured outputs: every request constrained by the
#      JSON schema bench/schema.json, temperature 0, c 1/4/16
#   8  heavy target + stories260K draft, the same structured outputs,
#      specd adaptive k against llama-server k=3, c 1/4
#
# --quick: one run (unless --runs), concurrency 1 and 4 only (scenario 1
#          keeps all: it is cheap), 32 output tokens, k 0..4; writes no doc
#          unless --doc (its figures are for checking the pipeline).
# --concs LIST: these concurrency points only (like 4,16), for any scenario
#          that takes several.
# --sides llama (or specd): run one server only (no ratios).
# --same-backend: specd loads llama-server's own shared libraries
#          (SPECD_LIB_DIR=$LLAMA_BIN) instead of the npm build, so both
#          servers run the same compiled kernels and the ratios measure the
#          daemons alone (the npm build's CPU kernels are slower at prefill
#          on some CPUs than a native build: docs/BENCHMARKS.md).
#
# Environment (all optional): SPECD (binary, default bin/specd, built by
# `make build`), LLAMA_BIN (folder with llama-server, default
# .cache/llama-build/bin, built by scripts/build-llama-tools.sh), STORIES,
# HEAVY (model files), PORT_SPECD / PORT_LLAMA (default 18181/18182),
# SPECD_EXTRA / LLAMA_EXTRA (extra server flags), SPECD_FA (value given to
# specd's --flash-attn, default off), FA (llama-server -fa, default off),
# S5_TEMPS (scenario 5's sweep temperatures, default "0 0.8"; the adaptive
# point and the llama-server comparison need 0).
# Servers listen on 127.0.0.1 only and are killed on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SPECD_CACHE:-$root/.cache}"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
SCENARIOS="1,2,3,4,5"
RUNS=""
QUICK=0
SIDES="specd,llama"
THREADS="${THREADS:-$(nproc)}"
S5_TEMPS="${S5_TEMPS:-0 0.8}"
DOC=auto
OUT=""
REPORT_ONLY=0
SAME_BACKEND=0
CONCS=""

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --scenario|--scenarios) SCENARIOS="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --sides) SIDES="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --concs) CONCS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --report) OUT="$2"; REPORT_ONLY=1; shift 2 ;;
    --same-backend) SAME_BACKEND=1; shift ;;
    --doc) DOC=1; shift ;;
    --no-doc) DOC=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$SCENARIOS" = all ] && SCENARIOS="1,2,3,4,5,6,7,8"
[ -n "$RUNS" ] || { [ "$QUICK" = 1 ] && RUNS=1 || RUNS=3; }
[ "$DOC" = auto ] && { [ "$QUICK" = 1 ] && DOC=0 || DOC=1; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive integer"
has() { [[ ",$1," == *",$2,"* ]]; }
for s in ${SCENARIOS//,/ }; do [[ "$s" =~ ^[1-8]$ ]] || die "unknown scenario $s"; done
for s in ${SIDES//,/ }; do [[ "$s" =~ ^(specd|llama)$ ]] || die "unknown side $s"; done

export GGML_NO_BACKTRACE=1
export SPECD_LIB_DIR="${SPECD_LIB_DIR:-$cache/backend/linux-x64-3.22.1}"
STORIES="${STORIES:-$root/../shared/models/stories260K.gguf}"
HEAVY="${HEAVY:-$cache/models/heavy-q8.gguf}"
SPECD="${SPECD:-$root/bin/specd}"
LLAMA_BIN="${LLAMA_BIN:-$cache/llama-build/bin}"
PORT_SPECD="${PORT_SPECD:-18181}"
PORT_LLAMA="${PORT_LLAMA:-18182}"
SPECD_FA="${SPECD_FA:-off}"
FA="${FA:-off}"
OUT="${OUT:-$cache/bench/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT/logs"
for t in jq curl awk; do command -v "$t" >/dev/null || die "needs $t"; done

# ---------------------------------------------------------------- build, once
if [ "$REPORT_ONLY" = 0 ]; then
needs_heavy=0
for s in 2 3 4 5 6; do has "$SCENARIOS" "$s" && needs_heavy=1; done
if has "$SIDES" llama && [ ! -x "$LLAMA_BIN/llama-server" ]; then
  log "building llama-server (scripts/build-llama-tools.sh; 5-10 min the first time)"
  "$root/scripts/build-llama-tools.sh" llama-server >&2
  LLAMA_BIN="$cache/llama-build/bin"
fi
if [ "$needs_heavy" = 1 ] && [ ! -f "$HEAVY" ]; then
  log "generating the heavy target (make bench-models)"
  make -C "$root" bench-models >&2
fi
if [ "$SPECD" = "$root/bin/specd" ]; then
  log "building specd (make build)"
  make -C "$root" build >/dev/null
fi
[ -x "$SPECD" ] || die "no specd binary at $SPECD"
if [ "$SAME_BACKEND" = 1 ]; then
  [ -x "$LLAMA_BIN/llama-server" ] || die "--same-backend needs llama-server's build in $LLAMA_BIN"
  export SPECD_LIB_DIR="$LLAMA_BIN"
fi
if has "$SIDES" specd && [ ! -d "$SPECD_LIB_DIR" ]; then make -C "$root" backend >&2; fi
[ -f "$STORIES" ] || die "no model at $STORIES"
fi

# ------------------------------------------------------------------- servers
declare -A PID=()
cleanup() {
  for s in "${!PID[@]}"; do kill "${PID[$s]}" 2>/dev/null || true; done
  for s in "${!PID[@]}"; do wait "${PID[$s]}" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_of() { [ "$1" = specd ] && echo "$PORT_SPECD" || echo "$PORT_LLAMA"; }

# start SIDE NAME CMD...: start a server, wait until /health says ready.
start() {
  local side="$1" name="$2"; shift 2
  local port; port="$(port_of "$side")"
  if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then die "port $port is already in use"; fi
  printf '%q ' "$@" >"$OUT/logs/$name.cmd"
  "$@" >"$OUT/logs/$name.log" 2>&1 &
  PID[$side]=$!
  local rc=0
  wait_ready "http://127.0.0.1:$port" "${PID[$side]}" || rc=$?
  case $rc in
    0) ;;
    1) tail -20 "$OUT/logs/$name.log" >&2
       unset "PID[$side]"
       die "$side server ($name) exited during start-up; log: $OUT/logs/$name.log" ;;
    *) die "$side server ($name) not ready after 120 s" ;;
  esac
}

stop() {
  local side="$1"
  [ -n "${PID[$side]:-}" ] || return 0
  kill "${PID[$side]}" 2>/dev/null || true
  wait "${PID[$side]}" 2>/dev/null || true
  unset "PID[$side]"
}

# specd_cmd MODEL DRAFT SLOTS CTX [extra...] / llama_cmd likewise: the same
# model files, threads, context, slots and flash attention on both sides.
specd_cmd() {
  local m="$1" d="$2" np="$3" ctx="$4"; shift 4
  CMD=("$SPECD" serve --model "$m")
  [ -n "$d" ] && CMD+=(--draft "$d")
  CMD+=(--host 127.0.0.1 --port "$PORT_SPECD" --ctx-size "$ctx" --parallel "$np" --threads "$THREADS" --flash-attn "$SPECD_FA" "$@")
  # shellcheck disable=SC2206
  [ -n "${SPECD_EXTRA:-}" ] && CMD+=($SPECD_EXTRA)
  return 0
}
llama_cmd() {
  local m="$1" d="$2" np="$3" ctx="$4"; shift 4
  CMD=("$LLAMA_BIN/llama-server" -m "$m")
  [ -n "$d" ] && CMD+=(-md "$d")
  CMD+=(--host 127.0.0.1 --port "$PORT_LLAMA" -c "$ctx" -np "$np" -t "$THREADS" -fa "$FA" "$@")
  # shellcheck disable=SC2206
  [ -n "${LLAMA_EXTRA:-}" ] && CMD+=($LLAMA_EXTRA)
  return 0
}

# bench SIDE OUTFILE ARGS...: one point; failures are recorded, not fatal.
bench() {
  local side="$1" out="$2"; shift 2
  local port; port="$(port_of "$side")"
  local cmd=("$SPECD" bench --url "http://127.0.0.1:$port" --json --no-progress --tokens-per-word "$TPW" "$@")
  printf '%q ' "${cmd[@]}" >"$out.cmd"
  if ! "${cmd[@]}" >"$out" 2>"$out.err"; then
    echo "   $side: $(tail -1 "$out.err")" >&2
    [ -s "$out" ] || rm -f "$out"
  fi
}

# ------------------------------------------------------------------ scenarios
if [ "$QUICK" = 1 ]; then OUTTOK=32; else OUTTOK=128; fi
# reqs C [MULT]: requests per point, MULT x C (default 4), at least 4 x MULT.
reqs() {
  local c="$1" m="${2:-4}"
  if [ "$QUICK" = 1 ]; then echo $(( c*2 > 4 ? c*2 : 4 )); else echo $(( c < 4 ? 4*m : c*m )); fi
}
quick_concs() {
  if [ -n "$CONCS" ]; then echo "${CONCS//,/ }"
  elif [ "$QUICK" = 1 ]; then echo "1 4"
  else echo "$1"; fi
}

# Tokens per word, measured once (the two models share one tokenizer) and
# given to every run, so both servers get byte-identical prompts.
TPW=""
calibrate() {
  [ -n "$TPW" ] && return 0
  local side="$1" port; port="$(port_of "$side")"
  TPW="$("$SPECD" bench --url "http://127.0.0.1:$port" --json --no-progress --requests 1 --input-tokens 64 --output-tokens 1 |
    jq -r '.workload.tokens_per_word')"
  log "calibrated: $TPW tokens per word (via $side)"
}

# pair SCEN "CONCS" MULT -- bench args: start the scenario's servers
# (CMD_specd / CMD_llama arrays set by the caller), then RUNS rounds over
# CONCS with the sides alternating, MULT x C requests per point (reqs).
pair() {
  local scen="$1" concs="$2" mult="$3"; shift 3
  local dir="$OUT/s$scen"; mkdir -p "$dir"
  local sides=()
  for s in specd llama; do has "$SIDES" "$s" && sides+=("$s"); done
  for s in "${sides[@]}"; do
    if [ "$s" = specd ]; then start specd "s$scen-specd" "${CMD_specd[@]}"; else start llama "s$scen-llama" "${CMD_llama[@]}"; fi
  done
  calibrate "${sides[-1]}"
  for r in $(seq 1 "$RUNS"); do
    local order=("${sides[@]}")
    if [ $((r % 2)) = 0 ] && [ ${#sides[@]} = 2 ]; then order=("${sides[1]}" "${sides[0]}"); fi
    for c in $concs; do
      for s in "${order[@]}"; do
        log "scenario $scen run $r/$RUNS c=$c $s"
        # Same seed for both sides (same prompts), a new one per run and
        # point: specd's prefix cache is always on and must not see a
        # prompt again.
        bench "$s" "$dir/c$c.$s.r$r.json" --seed $((r * 1000 + c)) --concurrency "$c" --requests "$(reqs "$c" "$mult")" "$@"
      done
    done
  done
  for s in "${sides[@]}"; do stop "$s"; done
}

scenario1() {
  local np=32 ctx=$((32 * 384))
  specd_cmd "$STORIES" "" $np $ctx --proposer none; CMD_specd=("${CMD[@]}")
  llama_cmd "$STORIES" "" $np $ctx --no-cache-prompt; CMD_llama=("${CMD[@]}")
  # 16 x C requests (at least 64): stories260K makes ~2,000 tok/s, so 4 x C
  # made points of one or two seconds, and single runs scattered by +-25 %.
  pair 1 "$(if [ -n "$CONCS" ]; then quick_concs; else echo "1 4 16 32"; fi)" 16 --input-tokens 128 --output-tokens "$OUTTOK" --warmup 2
}
scenario2() {
  local np=16 ctx=$((16 * 384))
  specd_cmd "$HEAVY" "$STORIES" $np $ctx --proposer draft --spec-k 4; CMD_specd=("${CMD[@]}")
  llama_cmd "$HEAVY" "$STORIES" $np $ctx --no-cache-prompt --spec-type draft-simple --spec-draft-n-max 4; CMD_llama=("${CMD[@]}")
  pair 2 "$(quick_concs "1 4 16")" 4 --input-tokens 128 --output-tokens "$OUTTOK" --warmup 2
}
scenario3() {
  local np=4 ctx=$((4 * 512))
  specd_cmd "$HEAVY" "" $np $ctx --proposer ngram --spec-k 4; CMD_specd=("${CMD[@]}")
  llama_cmd "$HEAVY" "" $np $ctx --no-cache-prompt --spec-type ngram-simple \
    --spec-ngram-simple-size-n 3 --spec-ngram-simple-size-m 4; CMD_llama=("${CMD[@]}")
  # --salt: a few random words before each prompt, new per run, so the 16
  # prompts are not served from specd's prefix cache when they come again.
  pair 3 "$(quick_concs "1 4")" 4 --dataset "$root/bench/copy.jsonl" --salt 4 --output-tokens "$OUTTOK" --warmup 2
}
scenario4() {
  local np=4 ctx=$((4 * 512))
  # specd's prefix cache is on by default, in either KV layout (decision
  # 0007); llama-server's needs --cache-prompt.
  specd_cmd "$HEAVY" "" $np $ctx --proposer none --prefix-cache; CMD_specd=("${CMD[@]}")
  llama_cmd "$HEAVY" "" $np $ctx --cache-prompt; CMD_llama=("${CMD[@]}")
  pair 4 "$(quick_concs "1 4")" 4 --input-tokens 416 --shared-prefix 384 --prefix-cache --output-tokens 32 --warmup 2
}
scenario5() {
  has "$SIDES" specd || { log "scenario 5 is specd-only; skipped"; return 0; }
  local dir="$OUT/s5" ks="0..8"; mkdir -p "$dir"
  [ "$QUICK" = 1 ] && ks="0..4"
  # c: one draft pass over one target pass, approximated by the ratio of the
  # weight files' sizes (decoding one token is bound by reading the weights).
  DRAFT_COST="$(awk -v a="$(stat -c %s "$STORIES")" -v b="$(stat -c %s "$HEAVY")" 'BEGIN{printf "%.4f", a/b}')"
  specd_cmd "$HEAVY" "$STORIES" 1 512 --proposer draft; CMD_specd=("${CMD[@]}")
  start specd s5-specd "${CMD_specd[@]}"
  calibrate specd
  for t in $S5_TEMPS; do
    for r in $(seq 1 "$RUNS"); do
      log "scenario 5 temperature $t run $r/$RUNS"
      bench specd "$dir/t$t.r$r.json" --seed "$r" --concurrency 1 --requests "$(reqs 2)" --sweep-k "$ks" \
        --temperature "$t" --draft-cost "$DRAFT_COST" --input-tokens 64 --output-tokens "$OUTTOK" \
        --plot "$dir/ksweep-t$t.r$r.svg" --warmup 1
      if [ "$t" = 0 ]; then
        # The same requests with the server's adaptive k (no k sent).
        log "scenario 5 adaptive k run $r/$RUNS"
        bench specd "$dir/adaptive.r$r.json" --seed "$r" --concurrency 1 --requests "$(reqs 2)" \
          --temperature 0 --input-tokens 64 --output-tokens "$OUTTOK" --warmup 1
      fi
    done
  done
  stop specd
  # llama-server's draft length is a server flag: one start per k, the same
  # requests (seed, prompts, temperature 0) as specd's sweep, k = 0 without
  # a draft model. Gives each server's best k for the single-stream goal.
  has "$SIDES" llama || return 0
  local kmax="${ks#0..}"
  for r in $(seq 1 "$RUNS"); do
    for k in $(seq 0 "$kmax"); do
      log "scenario 5 llama-server k=$k run $r/$RUNS"
      if [ "$k" = 0 ]; then
        llama_cmd "$HEAVY" "" 1 512 --no-cache-prompt
      else
        llama_cmd "$HEAVY" "$STORIES" 1 512 --no-cache-prompt --spec-type draft-simple --spec-draft-n-max "$k"
      fi
      start llama "s5-llama-k$k" "${CMD[@]}"
      bench llama "$dir/llama.k$k.r$r.json" --seed "$r" --concurrency 1 --requests "$(reqs 2)" \
        --temperature 0 --input-tokens 64 --output-tokens "$OUTTOK" --warmup 1
      stop llama
    done
  done
}

# Scenario 6: does adaptive k pay at every concurrency? specd with the draft
# loaded and adaptive k (no --spec-k), measured as is ("specd") and with
# every request sending proposer none ("none", same server, same prompts),
# against llama-server without speculation. llama-server's speculative
# figures at the same points are scenario 2's.
scenario6() {
  local np=16 ctx=$((16 * 384)) dir="$OUT/s6"; mkdir -p "$dir"
  has "$SIDES" specd || { log "scenario 6 needs specd; skipped"; return 0; }
  specd_cmd "$HEAVY" "$STORIES" $np $ctx --proposer draft; start specd s6-specd "${CMD[@]}"
  if has "$SIDES" llama; then
    llama_cmd "$HEAVY" "" $np $ctx --no-cache-prompt; start llama s6-llama "${CMD[@]}"
  fi
  if has "$SIDES" llama; then calibrate llama; else calibrate specd; fi
  local args=(--input-tokens 128 --output-tokens "$OUTTOK" --warmup 2)
  for r in $(seq 1 "$RUNS"); do
    for c in $(quick_concs "1 4 16"); do
      local order=(specd none llama)
      [ $((r % 2)) = 0 ] && order=(llama none specd)
      for v in "${order[@]}"; do
        log "scenario 6 run $r/$RUNS c=$c $v"
        case "$v" in
          specd) bench specd "$dir/c$c.specd.r$r.json" --seed $((r * 1000 + c)) --concurrency "$c" --requests "$(reqs "$c")" "${args[@]}" ;;
          none) bench specd "$dir/c$c.none.r$r.json" --seed $((r * 1000 + c)) --concurrency "$c" --requests "$(reqs "$c")" --proposer none "${args[@]}" ;;
          llama) has "$SIDES" llama && bench llama "$dir/c$c.llama.r$r.json" --seed $((r * 1000 + c)) --concurrency "$c" --requests "$(reqs "$c")" "${args[@]}" ;;
        esac
      done
    done
  done
  stop specd; stop llama
}

# Scenario 7: structured outputs. stories260K, every request constrained by
# the JSON schema of bench/schema.json (sent as llama-server's json_schema
# field, which both servers take), temperature 0, each answer ending where
# its JSON ends (no ignore_eos), c 1/4/16.
scenario7() {
  local np=16 ctx=$((16 * 384))
  specd_cmd "$STORIES" "" $np $ctx --proposer none; CMD_specd=("${CMD[@]}")
  llama_cmd "$STORIES" "" $np $ctx --no-cache-prompt; CMD_llama=("${CMD[@]}")
  pair 7 "$(quick_concs "1 4 16")" 16 --input-tokens 128 --output-tokens "$OUTTOK" --warmup 2 \
    --ignore-eos=false --body "{\"json_schema\": $(cat "$root/bench/schema.json")}"
}
# Scenario 8: structured outputs with speculation. heavy-q8 + stories260K
# draft, the same schema, temperature 0; specd with adaptive k, llama-server
# with its best k of scenario 5 (3), c 1/4.
scenario8() {
  local np=4 ctx=$((4 * 384))
  specd_cmd "$HEAVY" "$STORIES" $np $ctx --proposer draft; CMD_specd=("${CMD[@]}")
  llama_cmd "$HEAVY" "$STORIES" $np $ctx --no-cache-prompt --spec-type draft-simple --spec-draft-n-max 3; CMD_llama=("${CMD[@]}")
  pair 8 "$(quick_concs "1 4")" 4 --input-tokens 128 --output-tokens "$OUTTOK" --warmup 2 \
    --ignore-eos=false --body "{\"json_schema\": $(cat "$root/bench/schema.json")}"
}

if [ "$REPORT_ONLY" = 0 ]; then
  # When and on what the runs were made, for a later --report of them.
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')" >"$OUT/made"
  for s in ${SCENARIOS//,/ }; do "scenario$s"; done
else
  DRAFT_COST="$(jq -r '.sweep.draft_cost' "$(ls "$OUT"/s5/t*.json 2>/dev/null | head -1)" 2>/dev/null || echo '?')"
fi

# ------------------------------------------------------------------- report
# stats: numbers on stdin → "median min max" (median of an even count is the
# mean of the middle two).
stats() {
  sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) { print "NA NA NA"; exit }
    m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
    print m, a[1], a[NR] }'
}
# collect FILEGLOB JQ: the jq value from each run's file.
collect() {
  local f
  for f in $1; do if [ -f "$f" ]; then jq -r "$2" "$f"; fi; done
  return 0
}
fmt() { awk -v m="$1" -v lo="$2" -v hi="$3" -v d="$4" 'BEGIN {
  if (m == "NA") { print "–"; exit }
  f = "%." d "f"; printf(f " (" f "–" f ")\n", m, lo, hi) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "–"; else printf "%.2f\n", a/b }'; }
# paired GLOB FROM TO JQ: each run file of GLOB and its partner (the name
# with FROM replaced by TO; the two measured back to back in one run) give a
# ratio of their JQ values; prints the geometric mean of the ratios with a
# 90 % t-interval, "gm [lo, hi]" (one run: the ratio alone). Drift between
# runs cancels in each ratio, so this sees smaller differences than the
# ratio of medians; an interval that holds 1 does not tell the two apart.
paired() {
  local a b f g
  for f in $1; do
    [ -f "$f" ] || continue
    g="${f/$2/$3}"
    [ -f "$g" ] || continue
    a="$(jq -r "$4" "$f")"; b="$(jq -r "$4" "$g")"
    echo "$a $b"
  done | ratio_ci
}
sanitize() { sed -e "s#$LLAMA_BIN/##g" -e "s#$root/##g" -e "s#$(dirname "$root")/shared#../shared#g" -e "s#$cache#.cache#g"; }

metrics=(
  "output tok/s;.points[0].summary.output_throughput;1"
  "requests/s;.points[0].summary.request_throughput;2"
  "TTFT p50 ms;.points[0].summary.ttft_ms.p50;1"
  "TPOT p50 ms;.points[0].summary.tpot_ms.p50;2"
  "ITL p50 ms;.points[0].summary.itl_ms.p50;2"
  "E2E p99 ms;.points[0].summary.e2el_ms.p99;0"
  "acceptance;.points[0].summary | if .draft_reported then .acceptance_rate else empty end;3"
  "tokens/pass;.points[0].summary | if .draft_reported then .mean_accepted_length else empty end;2"
  "cached prompt tok;.points[0].summary.cached_tokens;0"
)
scenario_title=(
  ""
  "1. stories260K, no speculation"
  "2. heavy-q8 target + stories260K draft, draft speculation k=4"
  "3. heavy-q8, n-gram speculation (k=4), copy-heavy prompts (bench/copy.jsonl)"
  "4. heavy-q8, 384-token shared prefix + 32 unique tokens, prefix caching on"
  "5. k sweep on specd (heavy-q8 + stories260K draft)"
  "6. heavy-q8 + stories260K draft: specd's adaptive k against no speculation"
  "7. stories260K, structured outputs: JSON schema bench/schema.json, temperature 0"
  "8. heavy-q8 + stories260K draft, structured outputs (bench/schema.json), specd adaptive k, llama-server k=3"
)

section="$OUT/section.md"
{
  echo "### specd vs llama-server (generated by bench/compare.sh)"
  echo
  if [ "$REPORT_ONLY" = 1 ]; then
    echo "- runs made: $(cat "$OUT/made" 2>/dev/null || echo 'unknown (before compare.sh recorded it)'); report redone $(date -u '+%Y-%m-%d %H:%M UTC')"
  else
    echo "- date: $(cat "$OUT/made")"
  fi
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- command: \`bench/compare.sh --scenario $SCENARIOS --runs $RUNS$([ "$QUICK" = 1 ] && echo ' --quick') --sides $SIDES --threads $THREADS$([ "$SAME_BACKEND" = 1 ] && echo ' --same-backend')\`"
  if [ "$SAME_BACKEND" = 1 ]; then
    echo "- backend: **the same build on both sides** (specd loads llama-server's shared libraries)"
  else
    echo "- backend: specd on the npm build (\`make backend\`), llama-server on its own CMake build of the same tree"
  fi
  echo "- each cell: median (min–max) of $RUNS run(s); ratio = specd / llama-server of the medians (> 1 is better for specd in tok/s and req/s, worse in ms)"
  [ "$QUICK" = 1 ] && echo "- **quick mode**: fewer points, 32 output tokens, few requests per point — a pipeline check, not a result"
  [ "$SIDES" = llama ] && echo "- **llama-server only**: specd was not run, so there are no ratios"
  [ "$SIDES" = specd ] && echo "- **specd only**: llama-server was not run, so there are no ratios"
  for s in ${SCENARIOS//,/ }; do
    [ "$s" = 5 ] || [ "$s" = 6 ] && continue
    echo
    echo "#### ${scenario_title[$s]}"
    echo
    for side in specd llama; do
      [ -f "$OUT/logs/s$s-$side.cmd" ] && echo "- $side: \`$(sanitize <"$OUT/logs/s$s-$side.cmd")\`"
    done
    first="$(ls "$OUT/s$s"/*.json.cmd 2>/dev/null | head -1 || true)"
    [ -n "$first" ] && echo "- client (one point): \`$(sanitize <"$first")\`"
    echo
    echo "| c | metric | specd | llama-server | specd / llama |"
    echo "|---:|---|---:|---:|---:|"
    for c in $(ls "$OUT/s$s" 2>/dev/null | sed -n 's/^c\([0-9]*\)\..*\.json$/\1/p' | sort -nu); do
      fails=""
      for side in specd llama; do
        n="$(collect "$OUT/s$s/c$c.$side.r*.json" '.points[0].summary.failed' | awk '{s+=$1} END{print s+0}')"
        runs="$(collect "$OUT/s$s/c$c.$side.r*.json" '.points[0].summary.failed' | wc -l)"
        has "$SIDES" "$side" && [ "$n" != 0 ] && fails="$fails $side: $n failed requests;"
        has "$SIDES" "$side" && [ "$runs" -lt "$RUNS" ] && fails="$fails $side: $((RUNS - runs)) run(s) missing;"
      done
      for m in "${metrics[@]}"; do
        IFS=';' read -r name path digits <<<"$m"
        read -r sm slo shi < <(collect "$OUT/s$s/c$c.specd.r*.json" "$path" | stats)
        read -r lm llo lhi < <(collect "$OUT/s$s/c$c.llama.r*.json" "$path" | stats)
        [ "$sm" = NA ] && [ "$lm" = NA ] && continue
        # cached tokens only mean something where a cache is on
        [ "$name" = "cached prompt tok" ] && [[ "$sm" =~ ^(NA|0)$ ]] && [[ "$lm" =~ ^(NA|0)$ ]] && continue
        echo "| $c | $name | $(fmt "$sm" "$slo" "$shi" "$digits") | $(fmt "$lm" "$llo" "$lhi" "$digits") | $(ratio "$sm" "$lm") |"
      done
      if has "$SIDES" specd && has "$SIDES" llama; then
        echo "| $c | output tok/s, per-run ratio (90 % CI) | | | $(paired "$OUT/s$s/c$c.specd.r*.json" .specd. .llama. '.points[0].summary.output_throughput') |"
        # The decode phase alone (time to first token left out): llama-server's
        # mean time per output token over specd's, > 1 when specd is faster.
        echo "| $c | decode speed (1 / mean TPOT), per-run ratio (90 % CI) | | | $(paired "$OUT/s$s/c$c.llama.r*.json" .llama. .specd. '.points[0].summary.tpot_ms.mean') |"
      fi
      [ -n "$fails" ] && echo "| $c | **errors** |${fails} | | |"
    done
  done
  if has "$SCENARIOS" 5 && [ -d "$OUT/s5" ]; then
    echo
    echo "#### ${scenario_title[5]}"
    echo
    [ -f "$OUT/logs/s5-specd.cmd" ] && echo "- specd: \`$(sanitize <"$OUT/logs/s5-specd.cmd")\`"
    first="$(ls "$OUT/s5"/t*.json.cmd 2>/dev/null | head -1 || true)"
    [ -n "$first" ] && echo "- client: \`$(sanitize <"$first")\`"
    echo "- c = ${DRAFT_COST:-?} (weight-file size ratio draft/target); α fitted per run from the mean accepted lengths; plots: $(sanitize <<<"$OUT")/s5/ksweep-t*.svg"
    for t in 0 0.8; do
      ls "$OUT/s5"/t$t.r*.json >/dev/null 2>&1 || continue
      echo
      echo "temperature $t — α fitted: $(read -r m lo hi < <(collect "$OUT/s5/t$t.r*.json" '.sweep.alpha' | stats); fmt "$m" "$lo" "$hi" 3)"
      echo
      echo "| k | output tok/s | acceptance | tokens/pass | measured speed-up | Leviathan E/(kc+1) |"
      echo "|---:|---:|---:|---:|---:|---:|"
      for k in $(jq -r '.sweep.curve[].k' "$(ls "$OUT/s5"/t$t.r*.json | head -1)"); do
        row="| $k"
        for spec in "output_throughput|1" "acceptance_rate|3" "mean_accepted_length|2" "measured_speedup|2" "predicted_speedup|2"; do
          IFS='|' read -r key digits <<<"$spec"
          read -r m lo hi < <(collect "$OUT/s5/t$t.r*.json" ".sweep.curve[] | select(.k == $k) | .$key" | stats)
          row="$row | $(fmt "$m" "$lo" "$hi" "$digits")"
        done
        echo "$row |"
      done
    done
    if ls "$OUT/s5"/llama.k*.r*.json >/dev/null 2>&1; then
      echo
      echo "temperature 0, each server at each k (llama-server restarted per k with \`--spec-draft-n-max k\`; k = 0: no draft model); same prompts and seeds:"
      [ -f "$OUT/logs/s5-llama-k1.cmd" ] && echo "- llama (k = 1): \`$(sanitize <"$OUT/logs/s5-llama-k1.cmd")\`"
      echo
      echo "| k | specd output tok/s | llama-server output tok/s | specd / llama | specd acceptance | llama-server acceptance |"
      echo "|---:|---:|---:|---:|---:|---:|"
      best_s=0; best_l=0; bk_s=; bk_l=
      for f in $(ls "$OUT/s5"/llama.k*.r1.json | sed 's/.*llama\.k\([0-9]*\)\..*/\1/' | sort -n); do
        k="$f"
        read -r sm slo shi < <(collect "$OUT/s5/t0.r*.json" ".sweep.curve[] | select(.k == $k) | .output_throughput" | stats)
        read -r lm llo lhi < <(collect "$OUT/s5/llama.k$k.r*.json" '.points[0].summary.output_throughput' | stats)
        read -r sa salo sahi < <(collect "$OUT/s5/t0.r*.json" ".sweep.curve[] | select(.k == $k) | .acceptance_rate" | stats)
        read -r la lalo lahi < <(collect "$OUT/s5/llama.k$k.r*.json" '.points[0].summary | if .draft_reported then .acceptance_rate else 0 end' | stats)
        echo "| $k | $(fmt "$sm" "$slo" "$shi" 1) | $(fmt "$lm" "$llo" "$lhi" 1) | $(ratio "$sm" "$lm") | $(fmt "$sa" "$salo" "$sahi" 3) | $(fmt "$la" "$lalo" "$lahi" 3) |"
        if awk -v a="$sm" -v b="$best_s" 'BEGIN{exit !(a != "NA" && a > b)}'; then best_s="$sm"; bk_s="$k"; fi
        if awk -v a="$lm" -v b="$best_l" 'BEGIN{exit !(a != "NA" && a > b)}'; then best_l="$lm"; bk_l="$k"; fi
      done
      echo
      printf 'Each at its best k (medians): specd %.1f tok/s at k = %s, llama-server %.1f tok/s at k = %s: ratio %s.\n' \
        "$best_s" "$bk_s" "$best_l" "$bk_l" "$(ratio "$best_s" "$best_l")"
      if ls "$OUT/s5"/adaptive.r*.json >/dev/null 2>&1; then
        read -r am alo ahi < <(collect "$OUT/s5/adaptive.r*.json" '.points[0].summary.output_throughput' | stats)
        read -r aa aalo aahi < <(collect "$OUT/s5/adaptive.r*.json" '.points[0].summary.acceptance_rate' | stats)
        read -r at atlo athi < <(collect "$OUT/s5/adaptive.r*.json" '.points[0].summary.mean_accepted_length' | stats)
        echo
        echo "specd with adaptive k (no k sent; same requests): $(fmt "$am" "$alo" "$ahi" 1) tok/s, acceptance $(fmt "$aa" "$aalo" "$aahi" 3), $(fmt "$at" "$atlo" "$athi" 2) tokens per pass: $(ratio "$am" "$best_l") llama-server at its best k."
      fi
    fi
  fi
  if has "$SCENARIOS" 6 && [ -d "$OUT/s6" ]; then
    echo
    echo "#### ${scenario_title[6]}"
    echo
    for side in specd llama; do
      [ -f "$OUT/logs/s6-$side.cmd" ] && echo "- $side: \`$(sanitize <"$OUT/logs/s6-$side.cmd")\`"
    done
    first="$(ls "$OUT/s6"/*.json.cmd 2>/dev/null | head -1 || true)"
    [ -n "$first" ] && echo "- client (one point): \`$(sanitize <"$first")\`; \"specd none\" adds \`--proposer none\` (same server)"
    echo "- output tok/s, median (min–max); llama-server's speculative figures at these points: scenario 2"
    echo
    echo "- each ratio: of the medians, then the geometric mean of the per-run ratios with its 90 % interval (each run measures the three back to back)"
    echo
    echo "| c | specd adaptive k | specd none | llama-server none | adaptive / none | per run (90 % CI) | adaptive / llama none | per run (90 % CI) | acceptance | tokens/pass |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in $(ls "$OUT/s6" 2>/dev/null | sed -n 's/^c\([0-9]*\)\..*\.json$/\1/p' | sort -nu); do
      p='.points[0].summary.output_throughput'
      read -r am alo ahi < <(collect "$OUT/s6/c$c.specd.r*.json" "$p" | stats)
      read -r nm nlo nhi < <(collect "$OUT/s6/c$c.none.r*.json" "$p" | stats)
      read -r lm llo lhi < <(collect "$OUT/s6/c$c.llama.r*.json" "$p" | stats)
      read -r xm xlo xhi < <(collect "$OUT/s6/c$c.specd.r*.json" '.points[0].summary | if .draft_reported then .acceptance_rate else 0 end' | stats)
      read -r tm tlo thi < <(collect "$OUT/s6/c$c.specd.r*.json" '.points[0].summary | if .draft_reported then .mean_accepted_length else 1 end' | stats)
      echo "| $c | $(fmt "$am" "$alo" "$ahi" 1) | $(fmt "$nm" "$nlo" "$nhi" 1) | $(fmt "$lm" "$llo" "$lhi" 1) | $(ratio "$am" "$nm") | $(paired "$OUT/s6/c$c.specd.r*.json" .specd. .none. "$p") | $(ratio "$am" "$lm") | $(paired "$OUT/s6/c$c.specd.r*.json" .specd. .llama. "$p") | $(fmt "$xm" "$xlo" "$xhi" 3) | $(fmt "$tm" "$tlo" "$thi" 2) |"
    done
  fi
} >"$section"

cat "$section"
if [ "$DOC" = 1 ]; then
  doc="$root/docs/BENCHMARKS.md"
  begin="<!-- BEGIN bench/compare.sh output (generated; edit the script, not this) -->"
  end="<!-- END bench/compare.sh output -->"
  touch "$doc"
  if ! grep -qF "$begin" "$doc"; then printf '\n%s\n%s\n' "$begin" "$end" >>"$doc"; fi
  awk -v b="$begin" -v e="$end" -v f="$section" '
    $0 == b { print; while ((getline l < f) > 0) print l; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }' "$doc" >"$doc.tmp" && mv "$doc.tmp" "$doc"
  log "wrote the generated section of docs/BENCHMARKS.md (raw results: $OUT)"
else
  log "results in $OUT (docs/BENCHMARKS.md untouched)"
fi
