#!/bin/bash
# Builds and installs the project into _inst/ (components in _inst/lib/ompi-migrate).
# Re-runs only the steps whose inputs changed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$OMIG_ROOT"

[ configure -nt configure.ac ] && [ configure -nt config/omig_ompi.m4 ] || ./autogen.sh
if [ ! -f config.status ] || [ configure -nt config.status ]; then
    ./configure --prefix="$OMIG_ROOT/_inst" ${OMIG_CONFIGURE_ARGS:-} >"$OMIG_DEPS/configure.log" 2>&1 ||
        { tail -5 "$OMIG_DEPS/configure.log" >&2; die "configure failed (full log: $OMIG_DEPS/configure.log)"; }
fi
log=$OMIG_DEPS/build.log
{ make -s -j"$(nproc)" && make -s install; } >"$log" 2>&1 ||
    { grep -E 'error|Error' "$log" | head -20 >&2; die "build failed (full log: $log)"; }
say "built and installed in $OMIG_ROOT/_inst"
