#!/usr/bin/env bash
# The rsh agent of launch/netns-cluster.sh: Open MPI calls it as
#   netns-rsh.sh HOST COMMAND...
# to start its daemon (orted) on HOST. HOST is a network namespace; the
# command runs inside it, in a UTS namespace of its own whose host name is
# HOST, so Open MPI sees one node per namespace.
host=$1
shift
exec ip netns exec "$host" unshare --uts sh -c "hostname '$host' && exec $*"
