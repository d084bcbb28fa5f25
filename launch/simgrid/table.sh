#!/usr/bin/env bash
# The markdown table of predict.sh's scaling.csv: per model and scaling,
# step ms and efficiency of each exchange at each rank count.
#   bash launch/simgrid/table.sh scaling.csv
set -euo pipefail
awk -F, 'NR > 1 { key = $1 " " $2; if (!(key in seen)) { seen[key] = 1; keys[++nk] = key }
                  r[$5] = 1; has[key, $5] = 1; ok = $10 ~ /^[0-9.]+$/ # an efficiency, or why there is none
                  cell[key, $3, $5] = ok ? sprintf("%.1f ms, %.0f%%", $7, 100 * $10) : $10 }
  END {
    nr = 0; for (p in r) rs[++nr] = p + 0
    for (i = 1; i <= nr; i++) for (j = i + 1; j <= nr; j++) if (rs[j] < rs[i]) { t = rs[i]; rs[i] = rs[j]; rs[j] = t }
    split("auto direct collective hierarchical", ex, " ")
    for (k = 1; k <= nk; k++) {
      printf "\n%s\n\n| exchange |", keys[k]
      for (i = 1; i <= nr; i++) if ((keys[k], rs[i]) in has) printf " %d |", rs[i]
      printf "\n|---|"; for (i = 1; i <= nr; i++) if ((keys[k], rs[i]) in has) printf "---|"
      printf "\n"
      for (e = 1; e <= 4; e++) {
        printf "| %s |", ex[e]
        for (i = 1; i <= nr; i++) if ((keys[k], rs[i]) in has) {
          c = cell[keys[k], ex[e], rs[i]]; printf " %s |", c == "" ? "-" : c }
        printf "\n"
      }
    }
  }' "$1"
