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
