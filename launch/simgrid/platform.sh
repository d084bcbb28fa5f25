#!/usr/bin/env bash
# The simulated machines of the scaling prediction (launch/simgrid/README.md).
#   platform.sh fattree DIR RANKS   DIR/fattree.xml + DIR/hosts-RANKS: the cluster
#   platform.sh local   DIR RANKS   DIR/local.xml   + DIR/hosts-local-RANKS: this machine
#
# fattree: 32 nodes of 32 cores (one rank per core: 1,024 ranks at most) on
# a two-level fat tree (SimGrid FAT_TREE "2;8,4;1,8;1,1": 4 leaf switches of
# 8 nodes, 8 spine switches, every switch port 1 link), every link
# 100 Gbit/s (12.5 GB/s) and 0.5 us, so 1 us node to node under one leaf
# (2 links) and 2 us across the spine (4 links); inside a node, ranks talk
# through the node's loopback at SIM_NODE_BW (default 20 GB/s, a node's
# memory copy rate) and SIM_NODE_LAT (default 0.3 us). A rank's compute is
# what the profile measured on one core here (speed 1 Gflop/s with
# smpi/host-speed 1Gf: one simulated second per measured second).
#
# local: this machine, one host of 2 cores (SIM_LOCAL_CORES) whose ranks
# share the cores when there are more ranks than cores (np 4), and talk
# through shared memory at SIM_LOCAL_BW / SIM_LOCAL_LAT (calibrated against
# cnn-bench-exchange by predict.sh; defaults 5 GB/s, 1 us).
# Ranks fill a node before the next (32 ranks: 1 node; 64: 2 nodes; ...).
set -euo pipefail
kind=$1 dir=$2 ranks=$3
mkdir -p "$dir"
header='<?xml version="1.0"?>
<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">
<platform version="4.1">'
case $kind in
fattree)
  cat >"$dir/fattree.xml" <<XML
$header
  <!-- launch/simgrid/platform.sh: 32 nodes x 32 cores, two-level fat tree,
       100 Gbit/s links of 0.5 us; node loopback ${SIM_NODE_BW:-20GBps}, ${SIM_NODE_LAT:-0.3us} -->
  <cluster id="fattree" prefix="node-" suffix="" radical="0-31" speed="1Gf" core="32"
           bw="12.5GBps" lat="0.5us" sharing_policy="SPLITDUPLEX"
           loopback_bw="${SIM_NODE_BW:-20GBps}" loopback_lat="${SIM_NODE_LAT:-0.3us}"
           topology="FAT_TREE" topo_parameters="2;8,4;1,8;1,1"/>
</platform>
XML
  : >"$dir/hosts-$ranks"
  for ((r = 0; r < ranks; r++)); do echo "node-$((r / 32))" >>"$dir/hosts-$ranks"; done
  ;;
local)
  cat >"$dir/local.xml" <<XML
$header
  <!-- launch/simgrid/platform.sh: this machine, ${SIM_LOCAL_CORES:-2} cores, shared memory
       ${SIM_LOCAL_BW:-5GBps}, ${SIM_LOCAL_LAT:-1us} -->
  <cluster id="local" prefix="here" suffix="" radical="0-0" speed="1Gf"
           core="${SIM_LOCAL_CORES:-2}" bw="${SIM_LOCAL_BW:-5GBps}" lat="${SIM_LOCAL_LAT:-1us}"
           loopback_bw="${SIM_LOCAL_BW:-5GBps}" loopback_lat="${SIM_LOCAL_LAT:-1us}"/>
</platform>
XML
  : >"$dir/hosts-local-$ranks"
  for ((r = 0; r < ranks; r++)); do echo "here0" >>"$dir/hosts-local-$ranks"; done
  ;;
*)
  echo "usage: platform.sh fattree|local DIR RANKS" >&2
  exit 2
  ;;
esac
