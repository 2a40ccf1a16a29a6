# bench/lib.sh — shared by the bench scripts (source it; bash).

# ratio_ci: reads lines "A B" (two positive measurements of one round or
# run) and prints the geometric mean of A/B with its 90 % t-interval,
# "r [lo, hi]" ("r" alone for one pair, "–" for none).
ratio_ci() {
  awk 'BEGIN { split("6.314 2.920 2.353 2.132 2.015 1.943 1.895 1.860 1.833 1.812 1.796 1.782 1.771 1.761 1.753 1.746 1.740 1.734 1.729", t, " ") }
    $1 > 0 && $2 > 0 { n++; l[n] = log($1 / $2); s += l[n] }
    END {
      if (n == 0) { print "–"; exit }
      m = s / n
      if (n == 1) { printf "%.2f\n", exp(m); exit }
      for (i = 1; i <= n; i++) v += (l[i] - m) ^ 2
      se = sqrt(v / (n - 1) / n); q = (n - 1 <= 19) ? t[n - 1] : 1.645
      printf "%.2f [%.2f, %.2f]\n", exp(m), exp(m - q * se), exp(m + q * se) }'
}

# wait_ready URL PID: polls URL/health until it answers 200 (true), the
# process PID exits (false, status 1) or 120 s pass (false, status 2).
wait_ready() {
  local url="$1" pid="$2"
  for _ in $(seq 1 600); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ]; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 2
}
