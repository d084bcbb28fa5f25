#!/usr/bin/env bash
# Training throughput of cnn-train beside PyTorch CPU for every shipped
# config, same network, batch and thread count, measured in one run
# (ours and the peer alternating, best of REPS each, with the range), and
# the ratio against PyTorch's better layout (NCHW or channels-last, both
# timed in every rep). Needs a build (launch/test.sh or quickstart.sh) and,
# for the peer, python3-torch (apt-get install python3-torch).
#   bash launch/bench.sh [THREADS] [REPS] [CONFIG...]
# CONFIG: names under configs/ (default: every shipped model).
# Rows:
#   synthetic - one random batch, warm-up steps then timed steps
#               (cnn-bench vs launch/torch_peer.py): engine speed
#   real      - cnn-train on the config's data, shuffled batches, the first
#               STEPS steps of an epoch (--set train.max_steps), its "steady:"
#               figure (the steps after the run's first 5, as cnn-bench leaves
#               out 5 warm-up steps) vs the peer on the same IDX data
#               (launch/torch_peer.py --real, which skips its first 20
#               steps). No CIFAR-10 or cats-vs-dogs images ship in Debian,
#               so those configs train on sets made
#               here (synthetic CIFAR-10 batches by tests/tools/data_tool;
#               an image folder of 224x224 RGB JPEGs by `cnn-data jpegs`
#               from Fashion-MNIST classes 0 and 1). The peer reads IDX only:
#               for the other formats compare real against our synthetic row
#               (the vs_engine column: the data pipeline's cost). To compare
#               two builds, run the script with CNN_BUILD set to each.
# The peer network is rebuilt from `cnn-train --summary --json CONFIG`
# (launch/torch_peer.py); for the models ../shared/bench/torch_train.py
# also knows, its figures agree within the machine's noise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=${1:-1}
reps=${2:-3}
shift $(($# < 2 ? $# : 2))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(fashion_cnn lenet5_fashion cifar10_cnn catsdogs_simple
  catsdogs_cnn resnet20_cifar10 fashion_resnet)
build=${CNN_BUILD:-$root/build}
peer="$here/torch_peer.py"
py=/usr/bin/python3
have_torch=1
$py -c "import torch" 2>/dev/null || have_torch=0
[ "$have_torch" = 1 ] || echo "note: python3-torch not available; ours only"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# steps per timing: fewer on large images
steps_of() { case $1 in catsdogs_cnn) echo 8 ;; catsdogs_simple | resnet20_cifar10 | fashion_resnet) echo 30 ;;
  lenet5_fashion) echo 50 ;; *) echo 100 ;; esac; }
real_steps_of() { case $1 in catsdogs_cnn) echo 20 ;; resnet20_cifar10 | fashion_resnet | catsdogs_simple) echo 60 ;;
  *) echo 300 ;; esac; }
field() { sed -nE "s/.*$1=([0-9.]+).*/\1/p" | tail -1; }
ours_synth() { "$build/cnn-bench" "$root/configs/$1.ini" --threads "$threads" --steps "$(steps_of "$1")" |
  field train_img_s; }
ours_real() { (cd "$root" && "$build/cnn-train" "configs/$1.ini" --set train.max_steps="$(real_steps_of "$1")" \
  --set train.epochs=1 --set train.threads="$threads" --set data.test_limit=1000 --set train.progress=none \
  --set checkpoint.dir=none --set train.history=none $(data_args "$1") 2>/dev/null) |
  sed -nE 's/^steady:.* ([0-9.]+) img\/s.*/\1/p'; }
torch_run() { OMP_NUM_THREADS=$threads $py "$peer" --config "$root/configs/$1.ini" --cnn-train "$build/cnn-train" \
  --threads "$threads" "${@:2}" 2>/dev/null | field train_img_s; }
# best and range of a list of figures: "BEST MIN-MAX"
stats() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{v[NR]=$1} END {
  if (NR) printf "%.0f %.0f-%.0f\n", v[NR], v[1], v[NR]; else print "- -" }'; }
# --set options pointing a config at data made here (none for IDX configs)
tool=$build/tests/data_tool
fm=/usr/share/datasets/fashion-mnist
data_args() {
  case $(sed -nE 's/^format *= *([a-z0-9]+).*/\1/p' "$root/configs/$1.ini" | head -1) in
  cifar10)
    [ -d "$tmp/cifar" ] || "$tool" cifar "$tmp/cifar" 10000 1000 >/dev/null
    echo "--set data.dir=$tmp/cifar" ;;
  imagefolder)
    if [ ! -d "$tmp/folder" ]; then
      printf '[data]\ndir = %s\ntrain_limit = 12000\ntest_limit = 500\n' "$fm" >"$tmp/src.ini"
      "$build/cnn-data" jpegs "$tmp/src.ini" "$tmp/folder" >/dev/null
    fi
    echo "--set data.train_dir=$tmp/folder/train --set data.test_dir=$tmp/folder/test" ;;
  esac
}
is_idx() { grep -qE '^format *= *idx' "$root/configs/$1.ini"; }

fmt='%-17s %-9s %8s %-13s %8s %-13s %-6s %7s %9s\n'
printf "$fmt" model mode ours range torch range layout ratio vs_engine
for cfg in "${configs[@]}"; do
  for mode in synthetic real; do
    o=() tn=() tc=()
    for _ in $(seq "$reps"); do
      if [ "$mode" = synthetic ]; then
        o+=("$(ours_synth "$cfg")")
        if [ "$have_torch" = 1 ]; then
          tn+=("$(torch_run "$cfg" --steps "$(steps_of "$cfg")")")
          tc+=("$(torch_run "$cfg" --steps "$(steps_of "$cfg")" --channels-last)")
        fi
      else
        o+=("$(ours_real "$cfg" || true)")
        if [ "$have_torch" = 1 ] && is_idx "$cfg"; then
          tn+=("$(torch_run "$cfg" --real --max-steps "$(real_steps_of "$cfg")")")
          tc+=("$(torch_run "$cfg" --real --max-steps "$(real_steps_of "$cfg")" --channels-last)")
        fi
      fi
    done
    read -r ob orange <<<"$(stats "${o[@]}")"
    if [ "$ob" = - ]; then
      printf "$fmt" "$cfg" "$mode" "no data" - - - - - -
      continue
    fi
    read -r nb nrange <<<"$(stats "${tn[@]:-}")"
    read -r cb crange <<<"$(stats "${tc[@]:-}")"
    tb=$nb layout=nchw trange=$nrange
    if [ "$cb" != - ] && { [ "$nb" = - ] || [ "$cb" -gt "$nb" ]; }; then tb=$cb layout=nhwc trange=$crange; fi
    # real against our own synthetic row (the data pipeline's cost)
    ve=-
    if [ "$mode" = synthetic ]; then sb=$ob; else ve=$(awk -v a="$ob" -v b="$sb" 'BEGIN{printf "%.0f%%", 100*a/b}'); fi
    ratio=-
    if [ "$tb" = - ]; then tb=- trange=- layout=-; else
      ratio=$(awk -v a="$ob" -v b="$tb" 'BEGIN{printf "%.2fx", a/b}'); fi
    printf "$fmt" "$cfg" "$mode" "$ob" "$orange" "$tb" "$trange" "$layout" "$ratio" "$ve"
  done
done
echo "threads=$threads reps=$reps (best of reps; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F))"
