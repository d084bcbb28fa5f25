# Sourced by run.sh and fuzz.sh: the sanitizer options and libFuzzer flags
# of every harness run, and the known defects of known_failing.txt.
#   detect_leaks: LeakSanitizer after each input, with the suppressions of
#     the sanitizer job (only allocations inside system libraries);
#   allocator_may_return_null + max_allocation_size_mb: an allocation over
#     1 GiB fails (NULL) as it may on a real machine, so a size read from a
#     file must be refused or end in a clean out-of-memory error;
#   -rss_limit_mb: more than 2 GiB resident is a finding (memory in
#     proportion to a size field, not to the file); -timeout: an input
#     that takes over 10 s is one too.
here_env=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:max_allocation_size_mb=1024:intercept_tls_get_addr=0:fast_unwind_on_malloc=0
export LSAN_OPTIONS=suppressions=$here_env/../sanitize/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OPENBLAS_NUM_THREADS=1
fuzz_flags=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -max_len=65536)

# known: the reproducers of known_failing.txt (full paths); signatures: the
# strings that mark a report of one of those defects.
known=() signatures=()
while read -r f rest; do
  case $f in
    ''|'#'*) ;;
    signature:) signatures+=("${rest%% | *}") ;;
    *) known+=("$here_env/../../$f") ;;
  esac
done <"$here_env/known_failing.txt"
is_known() { local k; for k in "${known[@]}"; do [ "$k" -ef "$1" ] && return 0; done; return 1; }
