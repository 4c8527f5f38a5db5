# Shared helpers for the project's scripts (sourced, not run).
OMIG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OMIG_DEPS=${OMIG_DEPS:-$OMIG_ROOT/_deps}

say()  { printf '%s\n' "ompi-migrate setup: $*" >&2; }
die()  { printf '%s\n' "ompi-migrate setup: error: $*" >&2; exit 1; }

# apt run against a private configuration holding one deb822 .sources file, so the system's
# sources stay as they are (we never add deb-src, trixie or sid lines there).
# usage: private_apt NAME 'SOURCES-FILE-TEXT' apt-get-args...
private_apt() {
    local name=$1 text=$2; shift 2
    local d=$OMIG_DEPS/apt/$name
    mkdir -p "$d/sources.d" "$d/state/lists/partial" "$d/cache/archives/partial"
    : > "$d/empty.list"
    printf '%s\n' "$text" > "$d/sources.d/$name.sources"
    local opts=(-o Dir::Etc::SourceList="$d/empty.list" -o Dir::Etc::SourceParts="$d/sources.d"
                -o Dir::State="$d/state" -o Dir::Cache="$d/cache"
                -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
                -o APT::Sandbox::User=root)
    if [ ! -s "$d/state/lists/.updated" ]; then
        apt-get "${opts[@]}" -qq update >&2 && date > "$d/state/lists/.updated"
    fi
    apt-get "${opts[@]}" "$@"
}
