#!/bin/sh
# Build everything out of tree in ./build (configure once; re-bootstrap when the
# autotools inputs are newer than configure).  Extra arguments go to configure.
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
    ./bootstrap
fi
mkdir -p build
cd build
if [ ! -f Makefile ] || [ ../configure -nt config.status ]; then
    ../configure -q "$@"
fi
make -j"$(nproc 2>/dev/null || echo 2)" -s
