#!/bin/sh
# Builds the ACL emulator: lib/libmoemesh_aclemu.so next to this script (or at $1).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/lib/libmoemesh_aclemu.so}
mkdir -p "$(dirname "$out")"
${CC:-gcc} -shared -fPIC -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -fvisibility=hidden \
  -o "$out" "$here/csrc/emu.c" -lm -lpthread
