#!/usr/bin/env bash
# Installs the Debian packages cnn-train needs, if any is missing.
# Sourced by quickstart.sh and test.sh; runs apt-get (as root, or via sudo).
set -euo pipefail
CNN_PACKAGES="build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-dev hdf5-tools
libopenblas-dev libstb-dev libjpeg62-turbo-dev libcmocka-dev zlib1g-dev libinih-dev dataset-fashion-mnist
libplplot-dev plplot-driver-cairo"
missing=()
for p in $CNN_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
