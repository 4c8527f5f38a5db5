#!/bin/bash
# The dirty-page tracker that pre-copy builds on (src/dirty.c: userfaultfd asynchronous
# write-protection + PAGEMAP_SCAN, for this kernel without soft-dirty): a process that made
# its userfaultfd itself and handed it over is tracked from outside, and every round reports
# exactly the pages it wrote (test/helpers/dirty_check.c), for a 64 MiB and a 1 GiB buffer.
. "$(dirname "$0")/lib.sh"
CHECK=$OMIG_BUILDDIR/test/helpers/dirty_check
for mib in 64 1024; do
    out=$("$CHECK" "$mib" 2>&1) || fail "$mib MiB: $(echo "$out" | tail -3)"
    echo "$out" | sed "s/^ok - /ok - $mib MiB: /"
done
