#!/bin/bash
# Provide a CRIU >= 4.2 that passes `criu check` and can dump/restore an established TCP socket.
#
# Why not Debian 12's criu: 3.17 fails `criu check` on kernels >= 6.13 (vDSO layout) and 4.1
# (trixie) cannot dump any TCP socket on kernels >= 6.16 (SO_PASSCRED, upstream #2705).
#
# Order: 1. a criu on PATH that is >= 4.2 and passes the checks;
#        2. what an earlier run installed into _deps/criu (stamp: seconds);
#        3. build sid's source package with bookworm's toolchain into _deps/criu;
#        4. fallback: sid's binary .debs unpacked into _deps/criu, run through their own loader.
# The system's apt sources are never changed: sid is read through a private apt configuration.
# Prints the path of the working criu on stdout; everything else goes to stderr.
# OMIG_CRIU_METHOD=source|debs forces one install method (to test each); default: both in order.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIN_VERSION=4.2
PREFIX=$OMIG_DEPS/criu
SRCDIR=$OMIG_DEPS/src/criu-sid
STAMP=$PREFIX/.verified
SID_SOURCES='Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg'
# Headers and tools `make criu lib` needs, all from bookworm.
BUILD_DEPS=(gcc make pkg-config libc6-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
            libprotobuf-dev
            python3 libcap-dev libnl-3-dev libnet1-dev libnftables-dev libbsd-dev libgnutls28-dev
            uuid-dev dpkg-dev xz-utils)
# What the checks themselves need (ip netns, the tiny TCP program).
CHECK_DEPS=(iproute2 gcc libc6-dev)

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, runs criu check). Fix: sudo $0"

# Install bookworm packages that are missing; `apt-get update` only when needed (fresh machine).
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    say "installing from bookworm: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; } \
        || die "apt-get install ${missing[*]} failed. Fix: check that deb.debian.org is reachable and 'apt-get update' works"
}

criu_version() { "$1" --version 2>/dev/null | sed -n 's/^Version: *//p'; }

version_ok() {
    local v; v=$(criu_version "$1")
    [ -n "$v" ] && dpkg --compare-versions "$v" ge "$MIN_VERSION"
}

# The stamp records what was verified: the binary's identity and the kernel.
stamp_text() { printf '%s %s %s\n' "$1" "$(sha256sum < "$(readlink -f "$1")" | cut -c1-16)" "$(uname -r)"; }

# A process holding an established TCP connection (both ends, over 127.0.0.1) that keeps
# exchanging sequence numbers across the connection and publishes its progress in a file.
write_tcp_prog() {
    cat > "$1/tcpping.c" <<'EOF'
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0), s;
    if (argc != 3 || bind(l, (void *) &a, sizeof(a)) || listen(l, 1) ||
        getsockname(l, (void *) &a, &al) || connect(c, (void *) &a, sizeof(a)) ||
        (s = accept(l, NULL, NULL)) < 0)
        return 1;
    close(l);
    setsid();              /* a session leader: no --shell-job needed */
    FILE *p = fopen(argv[1], "w");
    fprintf(p, "%d\n", getpid());
    fclose(p);
    for (unsigned long i = 1;; i++) {               /* ping over c, read it back on s */
        unsigned long r = 0;
        if (write(c, &i, sizeof(i)) != sizeof(i) || read(s, &r, sizeof(r)) != sizeof(r) || r != i)
            return 2;
        FILE *f = fopen(argv[2], "w");
        fprintf(f, "%lu\n", i);
        fclose(f);
        usleep(20000);
    }
}
EOF
    gcc -O1 -o "$1/tcpping" "$1/tcpping.c"
}

# Wait until the counter in FILE exceeds $2 (progress), up to ~5 s.
wait_progress() {
    local _ n
    for _ in $(seq 50); do
        n=$(cat "$1" 2>/dev/null || echo 0)
        [ "${n:-0}" -gt "$2" ] 2>/dev/null && { echo "$n"; return 0; }
        sleep 0.1
    done
    return 1
}

# Dump and restore the TCP program with CRIU inside a throwaway network namespace.
tcp_check() {
    local criu=$1 ns=omig-criu-check-$$ tmp pid n rc=0
    tmp=$(mktemp -d /tmp/omig-criu-check.XXXXXX)
    write_tcp_prog "$tmp" || { say "cannot compile the TCP test program"; return 1; }
    if ! { ip netns add "$ns" && ip -n "$ns" link set lo up; }; then
        ip netns del "$ns" 2>/dev/null
        say "cannot create a network namespace for the check (ip netns add $ns)"
        return 1
    fi
    mkdir -m 0700 "$tmp/img"
    (
        set -e
        # Started as our child, not daemonized: the sandbox's init reaps orphans slowly and a
        # zombie keeping the PID would make the restore fail ("File exists"); we reap it.
        nsenter --net=/run/netns/"$ns" -- "$tmp/tcpping" "$tmp/pid" "$tmp/count" </dev/null >/dev/null 2>&1 &
        pid=$!
        n=$(wait_progress "$tmp/count" 2) || { echo "test program made no progress" > "$tmp/why"; exit 1; }
        nsenter --net=/run/netns/"$ns" -- "$criu" dump -t "$pid" -D "$tmp/img" -o dump.log -v4 \
            --tcp-established --network-lock nftables \
            || { echo "dump failed: $(grep -E 'Error|error' "$tmp/img/dump.log" | tail -1)" > "$tmp/why"; exit 1; }
        { wait "$pid"; } 2>/dev/null || true   # reap the task CRIU killed after the dump
        n=$(cat "$tmp/count")
        nsenter --net=/run/netns/"$ns" -- "$criu" restore -D "$tmp/img" -o restore.log -v4 -d \
            --tcp-established --network-lock nftables --pidfile "$tmp/rpid" \
            || { echo "restore failed: $(grep -E 'Error|error' "$tmp/img/restore.log" | tail -1)" > "$tmp/why"; exit 1; }
        wait_progress "$tmp/count" "$((n + 3))" >/dev/null \
            || { echo "restored task does not exchange data over its TCP connection" > "$tmp/why"; exit 1; }
    ) 2>>"$tmp/stderr" || rc=1   # (bash reports the killed job on stderr)
    [ $rc = 0 ] || say "TCP dump/restore check failed: $(cat "$tmp/why" 2>/dev/null) (logs: $tmp/img)"
    # Kill whatever runs in the namespace (the original or the restored task), then remove it.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    [ $rc = 0 ] && rm -rf "$tmp"
    return $rc
}

# Full verification of one binary: version, `criu check`, TCP dump/restore. Stamped on success.
verify() {
    local criu=$1 stampfile=$2 out
    version_ok "$criu" || { say "$criu: version '$(criu_version "$criu")' < $MIN_VERSION"; return 1; }
    out=$("$criu" check 2>&1) || { say "$criu check failed: $(echo "$out" | tail -3)"; return 1; }
    [ -f "$stampfile" ] && [ "$(cat "$stampfile")" = "$(stamp_text "$criu")" ] && return 0
    apt_install "${CHECK_DEPS[@]}"
    tcp_check "$criu" || return 1
    mkdir -p "$(dirname "$stampfile")"
    stamp_text "$criu" > "$stampfile"
}

apt_source() { (cd "$SRCDIR" && private_apt sid "$SID_SOURCES" -q source criu) >>"$SRCDIR/apt.log" 2>&1; }

# Download and unpack sid's criu source package (private apt configuration, bookworm keyring).
fetch_source() {
    local dir
    rm -rf "$SRCDIR" && mkdir -p "$SRCDIR"
    apt_install dpkg-dev xz-utils
    if ! apt_source && ! ls "$SRCDIR"/criu_*.dsc >/dev/null 2>&1; then
        rm -f "$OMIG_DEPS/apt/sid/state/lists/.updated"     # sid moved since the last update
        apt_source || say "apt-get source criu (sid) failed: $(grep -m1 '^E:' "$SRCDIR/apt.log")"
    fi
    dir=$(find "$SRCDIR" -maxdepth 1 -mindepth 1 -type d -name 'criu-*' | head -1)
    [ -n "$dir" ] || dir=$(unpack_orig) || return 1
    echo "$dir"
}

# Some mirrors lack a source package's debian.tar.xz while its .dsc and upstream tarball are
# there (apt keeps only files whose hash matches the signed index). The Debian patches are not
# needed to build criu, so build the upstream tarball, after checking it against the .dsc.
unpack_orig() {
    local orig dsc sum
    orig=$(ls "$SRCDIR"/criu_*.orig.tar.* 2>/dev/null | head -1)
    dsc=$(ls "$SRCDIR"/criu_*.dsc 2>/dev/null | head -1)
    [ -n "$orig" ] && [ -n "$dsc" ] || { say "no criu source downloaded from sid"; return 1; }
    sum=$(sha256sum "$orig" | cut -d' ' -f1)
    grep -q "^ $sum $(stat -c %s "$orig") $(basename "$orig")\$" "$dsc" \
        || { say "$(basename "$orig") does not match $(basename "$dsc")"; return 1; }
    say "Debian packaging of criu not downloadable ($(grep -m1 -o '[^/]*debian.tar[^ ]*  *404.*' "$SRCDIR/apt.log" || echo 'see apt.log'));"
    say "building the upstream $(basename "$orig") instead (its hash checked against the .dsc apt verified)"
    mkdir -p "$SRCDIR/upstream" && tar -xf "$orig" -C "$SRCDIR/upstream" || return 1
    find "$SRCDIR/upstream" -maxdepth 1 -mindepth 1 -type d -name 'criu-*' | head -1
}

# Build criu and libcriu with bookworm's toolchain; install into $PREFIX (no pip, no docs).
build_source() {
    local dir t0=$SECONDS
    apt_install "${BUILD_DEPS[@]}"
    dir=$(fetch_source) || return 1
    say "building $(basename "$dir") from source (log: $SRCDIR/build.log)"
    local mk=(NETWORK_LOCK_DEFAULT=NETWORK_LOCK_NFTABLES PREFIX="$PREFIX" SKIP_PIP_INSTALL=1
              LIBDIR="$PREFIX/lib" PLUGINDIR="$PREFIX/lib/criu")
    make -C "$dir" -j"$(nproc)" "${mk[@]}" criu lib > "$SRCDIR/build.log" 2>&1 \
        && rm -rf "$PREFIX" \
        && make -C "$dir" "${mk[@]}" install-criu install-lib >> "$SRCDIR/build.log" 2>&1 \
        || { say "build failed: $(grep -m1 -E 'error|Error' "$SRCDIR/build.log" || tail -1 "$SRCDIR/build.log")"; return 1; }
    say "built and installed in $((SECONDS - t0)) s"
}

# Fallback: sid's binary packages and their library closure, unpacked with dpkg -x and run
# through sid's own loader (sid's criu needs sid's libc; the system libc stays as it is).
install_binary_debs() {
    local d=$OMIG_DEPS/debs/criu root=$PREFIX/root ml=usr/lib/x86_64-linux-gnu
    rm -rf "$d" "$PREFIX" && mkdir -p "$d" "$root" "$PREFIX/sbin"
    : > "$d/status"     # an empty dpkg status: apt downloads the whole dependency closure
    (cd "$d" && private_apt sid "$SID_SOURCES" -qq -y -o Dir::State::status="$d/status" \
        -o Dir::Cache::archives="$d" install --download-only criu >&2) \
        || { say "downloading sid's criu .debs failed"; return 1; }
    local deb
    for deb in "$d"/*.deb; do dpkg -x "$deb" "$root"; done
    cat > "$PREFIX/sbin/criu" <<EOF
#!/bin/sh
# sid's criu through sid's loader and libraries (installed by scripts/setup-criu.sh).
exec "$root/$ml/ld-linux-x86-64.so.2" --library-path "$root/$ml:$root/lib/x86_64-linux-gnu" "$root/usr/sbin/criu" "\$@"
EOF
    chmod 0755 "$PREFIX/sbin/criu"
}

main() {
    local sys
    sys=$(command -v criu || true)
    if [ -n "$sys" ] && [ "$(readlink -f "$sys")" != "$(readlink -f "$PREFIX/sbin/criu")" ] \
        && version_ok "$sys" && verify "$sys" "$OMIG_DEPS/criu-system.verified"; then
        echo "$sys"; return 0
    fi
    [ -x "$PREFIX/sbin/criu" ] && verify "$PREFIX/sbin/criu" "$STAMP" && { echo "$PREFIX/sbin/criu"; return 0; }

    local method=${OMIG_CRIU_METHOD:-auto}
    if [ "$method" != debs ] && build_source && verify "$PREFIX/sbin/criu" "$STAMP"; then
        echo "$PREFIX/sbin/criu"; return 0
    fi
    [ "$method" = debs ] || say "source build did not give a working criu; falling back to sid's binary packages"
    if [ "$method" != source ] && install_binary_debs && verify "$PREFIX/sbin/criu" "$STAMP"; then
        echo "$PREFIX/sbin/criu"; return 0
    fi
    die "no working CRIU >= $MIN_VERSION. Causes are printed above (build log: $SRCDIR/build.log).
Fix: make sure deb.debian.org is reachable (sid is read through $OMIG_DEPS/apt/sid, the system
sources stay untouched), that the kernel has CONFIG_CHECKPOINT_RESTORE and nf_tables, then rerun
$0; or install a CRIU >= $MIN_VERSION on PATH yourself."
}

main "$@"
