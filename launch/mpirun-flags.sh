#!/usr/bin/env bash
# Prints the extra mpirun flags this machine needs: --allow-run-as-root only
# when running as root (containers, CI), --oversubscribe only when asking
# for more ranks than cores. Usage: mpirun $(launch/mpirun-flags.sh NP) ...
np=${1:-1}
flags=""
[ "$(id -u)" -eq 0 ] && flags="$flags --allow-run-as-root"
[ "$np" -gt "$(nproc)" ] && flags="$flags --oversubscribe"
echo "$flags"
