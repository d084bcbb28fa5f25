# Sourced by the shell tests once they have set case_name and src: a work
# directory removed on exit, fail, and the mpirun flags this machine needs.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL [$case_name]: $*"; exit 1; }
mpiflags() { bash "$src/launch/mpirun-flags.sh" "$1"; }
