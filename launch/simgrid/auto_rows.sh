#!/usr/bin/env bash
# The "auto" rows of predict.sh's scaling.csv: auto is the exchange
# cnn_dist_exchange_pick chooses, hierarchical on every platform.sh shape
# (one node of up to 32 ranks, or several nodes of 32), so its rows are
# those runs' with the exchange renamed.
#   bash launch/simgrid/auto_rows.sh scaling.csv
# (OFS is set before the first row is rebuilt: set in the action, after
# $3 = ..., the first auto row came out space-separated and table.sh made
# a table of its own for it.)
set -euo pipefail
awk -F, -v OFS=, 'NR > 1 && $3 == "hierarchical" && $10 ~ /^[0-9.]+$/ { $3 = "auto"; print }' "$1"
