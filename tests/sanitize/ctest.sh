#!/usr/bin/env bash
# Runs ctest in a sanitizer build (cmake -DCNN_SANITIZE=ON) with the
# sanitizer options the suite needs; the arguments go to ctest:
#   bash tests/sanitize/ctest.sh build-asan -L 'unit|gradcheck|integration'
# Every ASan, LeakSanitizer or UBSan report ends the process with a non-zero
# code (UBSan through -fno-sanitize-recover), so it fails its test. The shell
# tests run the programs of the same build directory, and mpirun passes this
# environment to its ranks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$1
shift
# detect_leaks: leaks in our code are errors; what is suppressed (only
# inside the system libraries) is listed in lsan.supp with the reasons.
# fast_unwind_on_malloc=0: whole allocation stacks through the system
# libraries (built without frame pointers), so that a suppression can see
# which library allocated (CNN_ASAN_FAST_UNWIND=1 is quicker, for a look).
# intercept_tls_get_addr=0: GCC 12's LeakSanitizer otherwise crashes
# ("Tracer caught signal 11") scanning a bogus dynamic-TLS range once
# PLplot's dlopen'ed cairo driver has run (cnn-train's end-of-run plots).
export ASAN_OPTIONS=detect_leaks=1:intercept_tls_get_addr=0:fast_unwind_on_malloc=${CNN_ASAN_FAST_UNWIND:-0}:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1
export LSAN_OPTIONS=suppressions=$here/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OPENBLAS_NUM_THREADS=1
exec ctest --test-dir "$dir" --output-on-failure "$@"
