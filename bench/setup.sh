#!/usr/bin/env bash
# What `make bench` needs besides `make host`: a C compiler for the UDP blaster (bench/blaster.c) and the
# qemu VM of tests/vm for the tc comparison. Idempotent.
set -euo pipefail
missing=()
command -v gcc >/dev/null || missing+=(gcc)
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bash "$(dirname "$0")/../tests/vm/setup.sh" >/dev/null
