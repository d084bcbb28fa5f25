#!/usr/bin/env bash
# cmake --install into a temporary prefix, then use only what is there.
#   install_test.sh CASE BUILD_DIR SOURCE_DIR
# Cases: layout (files, --version, usage errors, a shipped config trained
# by the installed programs from an empty directory), pkgconfig and cmake
# (a small C program built against the installed libcnn), module (Lmod:
# module use + module load).
set -uo pipefail
case_name=$1
build=$2
src=$3
. "$src/tests/lib.sh"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "cmake --install failed"; }
mkdir "$work/run" && cd "$work/run" || exit 1
version=$(sed -nE 's/^project\(cnn-train VERSION ([0-9.]+).*/\1/p' "$src/CMakeLists.txt")
programs=(cnn-train cnn-tune cnn-bench cnn-layer-bench cnn-predict cnn-data cnn-plot cnn-bench-exchange)

# The user program: a shipped config's model, through the public headers.
cat >model_size.c <<'EOF'
#include <stdio.h>
#include <cnn/config.h>
#include <cnn/model.h>
#include <cnn/version.h>

int main(int argc, char **argv)
{
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    cnn_model *m = NULL;
    if (argc != 2 || cnn_config_load(&cfg, argv[1], &err) ||
        cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err)) {
        fprintf(stderr, "model_size: %s\n", err.msg);
        return 1;
    }
    printf("libcnn %s (headers %s): %zu parameters\n", cnn_version(), CNN_VERSION_STRING,
           m->nparams);
    cnn_model_free(m);
    cnn_config_free(cfg);
    return 0;
}
EOF
expected="libcnn $version (headers $version): 203898 parameters"
# check_program BINARY: runs it on the installed fashion_cnn.ini
check_program() {
  local out
  out=$("$1" "$prefix/share/cnn-train/configs/fashion_cnn.ini" 2>&1) || { echo "$out"; fail "$1 failed"; }
  [ "$out" = "$expected" ] || fail "$1 printed '$out', expected '$expected'"
}
# linked_with BINARY [LD_LIBRARY_PATH]: it loads the installed libcnn.so
# (ldd's whole output first: grep -q would end ldd early under pipefail)
linked_with() {
  local libs
  libs=$(LD_LIBRARY_PATH=${2:-} ldd "$1")
  grep -q "=> $prefix/lib/libcnn.so" <<<"$libs" || { echo "$libs"; fail "$1 does not load the installed libcnn.so"; }
}

case "$case_name" in
layout)
  for f in "${programs[@]/#/bin/}" lib/libcnn.so "lib/libcnn.so.${version%%.*}" "lib/libcnn.so.$version" \
    include/cnn/train.h include/cnn/model.h include/cnn/version.h lib/pkgconfig/cnn.pc \
    lib/cmake/cnn/cnnConfig.cmake lib/cmake/cnn/cnnConfigVersion.cmake lib/cmake/cnn/cnnTargets.cmake \
    share/cnn-train/configs/fashion_cnn.ini share/cnn-train/launch/slurm.sbatch \
    share/cnn-train/launch/mpirun-flags.sh "share/modulefiles/cnn-train/$version.lua"; do
    [ -e "$prefix/$f" ] || { (cd "$prefix" && find . | sort); fail "no $f in the prefix"; }
  done
  [ -x "$prefix/share/cnn-train/launch/slurm.sbatch" ] || fail "slurm.sbatch is not executable"
  grep -qF "$src" "$prefix/share/modulefiles/cnn-train/$version.lua" "$prefix/lib/pkgconfig/cnn.pc" &&
    fail "an installed file names the source tree"
  for p in "${programs[@]}"; do
    out=$("$prefix/bin/$p" --version 2>&1)
    rc=$?
    [ "$rc" -eq 0 ] || fail "$p --version exited $rc"
    case "$p" in
    cnn-train) [ "$out" = "cnn-train $version" ] || fail "$p --version printed '$out'" ;;
    *) [ "$out" = "$p (cnn-train) $version" ] || fail "$p --version printed '$out'" ;;
    esac
    "$prefix/bin/$p" --no-such-option >/dev/null 2>&1 </dev/null
    rc=$?
    [ "$rc" -eq 2 ] || fail "$p --no-such-option exited $rc, expected 2"
  done
  for p in cnn-train cnn-tune cnn-bench cnn-layer-bench cnn-predict cnn-data cnn-plot; do # CNN-BENCH-EXCHANGE runs on defaults
    "$prefix/bin/$p" >/dev/null 2>&1 </dev/null
    rc=$?
    [ "$rc" -eq 2 ] || fail "$p with no arguments exited $rc, expected 2"
  done
  # The installed programs train the installed config, here and at 2 ranks.
  cfg=$prefix/share/cnn-train/configs/fashion_cnn.ini
  small=(--set data.train_limit=600 --set data.test_limit=300 --set train.epochs=1
         --set train.threads=1 --set train.progress=none)
  "$prefix/bin/cnn-train" "$cfg" "${small[@]}" >train.out 2>&1 || { cat train.out; fail "installed cnn-train failed"; }
  grep -q '^test: loss=' train.out && [ -f checkpoints/fashion_cnn/ckpt-e0001-s00000019.h5 ] ||
    { cat train.out; fail "no test line or checkpoint"; }
  # shellcheck disable=SC2046
  mpirun $(bash "$prefix/share/cnn-train/launch/mpirun-flags.sh" 2) -np 2 "$prefix/bin/cnn-train" "$cfg" \
    "${small[@]}" --set checkpoint.dir=two >train2.out 2>&1 || { cat train2.out; fail "installed cnn-train at 2 ranks"; }
  grep -q '^cnn-train: 2 ranks' train2.out && cmp -s <(grep '^test:' train.out) <(grep '^test:' train2.out) ||
    { cat train.out train2.out; fail "2 ranks did not train as 1"; }
  "$prefix/bin/cnn-plot" fashion_cnn_history.csv >plot.out 2>&1 && [ -s fashion_cnn_history-loss.png ] ||
    { cat plot.out; fail "installed cnn-plot failed"; }
  ;;
pkgconfig)
  export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
  [ "$(pkg-config --modversion cnn)" = "$version" ] || fail "pkg-config --modversion cnn"
  # shellcheck disable=SC2046
  cc -std=c11 -Wall -Werror -o model_size model_size.c $(pkg-config --cflags --libs cnn) ||
    fail "cannot build against libcnn through pkg-config"
  linked_with ./model_size "$prefix/lib"
  LD_LIBRARY_PATH=$prefix/lib check_program ./model_size
  ;;
cmake)
  mkdir app && mv model_size.c app/ && cat >app/CMakeLists.txt <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(model_size LANGUAGES C)
find_package(cnn 0.1 REQUIRED)
add_executable(model_size model_size.c)
target_link_libraries(model_size PRIVATE cnn::cnn)
EOF
  cmake -S app -B app-build -DCMAKE_PREFIX_PATH="$prefix" >cmake.log 2>&1 &&
    cmake --build app-build >>cmake.log 2>&1 || { cat cmake.log; fail "cannot build against libcnn through find_package"; }
  # CMake's build tree RPATH points at the installed lib directory
  linked_with app-build/model_size
  check_program app-build/model_size
  ;;
module)
  init=/usr/share/lmod/lmod/init/bash
  [ -f "$init" ] || { echo "SKIP: no Lmod (apt-get install lmod)"; exit 77; }
  out=$(bash -c ". $init && module use '$prefix/share/modulefiles' && module load cnn-train &&
    command -v cnn-train && cnn-train --version && echo \"\$CNN_TRAIN_SHARE\" &&
    pkg-config --modversion cnn && module list" 2>&1) || { echo "$out"; fail "module load cnn-train failed"; }
  want=$(printf '%s\n' "$prefix/bin/cnn-train" "cnn-train $version" "$prefix/share/cnn-train" "$version")
  [ "$(head -4 <<<"$out")" = "$want" ] || { echo "$out"; fail "the module did not set up the installed cnn-train"; }
  grep -q "cnn-train/$version" <<<"$out" || { echo "$out"; fail "module list does not show cnn-train/$version"; }
  # and a program built through the module's PKG_CONFIG_PATH runs with its LD_LIBRARY_PATH
  bash -c ". $init && module use '$prefix/share/modulefiles' && module load cnn-train &&
    cc -std=c11 -o model_size model_size.c \$(pkg-config --cflags --libs cnn) && ./model_size \"\$CNN_TRAIN_SHARE/configs/fashion_cnn.ini\"" \
    >mod.out 2>&1 || { cat mod.out; fail "building with the module loaded"; }
  [ "$(tail -1 mod.out)" = "$expected" ] || { cat mod.out; fail "the module-built program printed something else"; }
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
