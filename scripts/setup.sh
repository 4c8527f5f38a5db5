#!/bin/bash
# Installs what the project needs on a Debian 12 machine, idempotently (seconds when done):
#   - Debian packages (Open MPI 4.1.4 + dev headers, PMIx, hwloc, autotools, iproute2, nftables)
#   - the exact Debian source of the installed Open MPI, for component-private headers
#   - a CRIU >= 4.2 that works on this kernel (scripts/setup-criu.sh)
# The system's apt sources are never changed: source packages come through a private config.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PACKAGES=(openmpi-bin libopenmpi-dev libpmix-dev libhwloc-dev pkg-config autoconf automake
          libtool make gcc iproute2 nftables util-linux procps dpkg-dev xz-utils python3
          hpcc      # an unmodified MPI application from Debian, for the tests
          gnuplot-nox)   # the benchmarks' plots

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing packages: ${missing[*]}. Fix: run this script as root"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

fetch_ompi_source() {
    local ver upstream
    ver=$(dpkg-query -W -f='${source:Version}' libopenmpi-dev)
    upstream=${ver%%-*}
    [ -f "$OMIG_DEPS/src/openmpi-$upstream/ompi/mca/pml/ob1/pml_ob1.h" ] && return 0
    say "fetching the Debian source of openmpi $ver (private headers)"
    mkdir -p "$OMIG_DEPS/src"
    (cd "$OMIG_DEPS/src" && private_apt bookworm-src 'Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' source -qq "openmpi=$ver" >/dev/null) ||
        die "cannot fetch the openmpi $ver source package. Fix: check that deb.debian.org is reachable, or pass --with-ompi-source=DIR to configure"
}

install_packages
fetch_ompi_source
"$OMIG_ROOT/scripts/setup-criu.sh" >/dev/null
say "ready"
