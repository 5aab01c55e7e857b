#!/usr/bin/env bash
# Side-by-side relay-cell crypto benchmark: C tor's own `bench cell_ops`
# (plus bench/ctor_exit_ops.c for the exit cases C tor's bench leaves out)
# and oxit's `cargo bench --bench cell_ops`, in the same invocation, pinned
# to one CPU. Absolute times on this shared, changing machine mean little;
# the oxit/C ratio from one run is the figure to read (bench/README.md).
#
# C tor comes from Debian's source package of the installed tor (apt-get
# source), built once into a cache directory outside the repository.
#
# Usage: bench/ctor_cell_ops.sh [--build-only] [--runs N] [--cpu C]
#   CTOR_CACHE   cache dir (default ${XDG_CACHE_HOME:-~/.cache}/oxit/ctor-bench)
set -euo pipefail

CACHE=${CTOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oxit/ctor-bench}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CPU=1
RUNS=3
BUILD_ONLY=0
while [ $# -gt 0 ]; do
    case $1 in
        --build-only) BUILD_ONLY=1 ;;
        --runs) RUNS=$2; shift ;;
        --cpu) CPU=$2; shift ;;
        *) echo "usage: $0 [--build-only] [--runs N] [--cpu C]" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "== $*" >&2; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- 1. Source of the tor version apt would install --------------------------
ensure_deb_src() {
    # Is there any deb-src entry already?
    if grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return
    fi
    log "adding deb-src entries in /etc/apt/sources.list.d/oxit-ctor-bench-src.sources"
    as_root tee /etc/apt/sources.list.d/oxit-ctor-bench-src.sources >/dev/null <<'SRC'
# Added by oxit bench/ctor_cell_ops.sh: source of tor for the C baseline.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    as_root apt-get update -qq
}

fetch_source() {
    local ver
    ver=$(apt-cache policy tor | awk '/Candidate:/ {print $2}')
    [ -n "$ver" ] && [ "$ver" != "(none)" ] || { echo "no tor candidate in apt" >&2; exit 1; }
    SRC_VER=$ver
    local upstream=${ver#*:}; upstream=${upstream%%-*}
    SRC="$CACHE/tor-$upstream"
    if [ -f "$SRC/configure" ]; then return; fi
    ensure_deb_src
    mkdir -p "$CACHE"
    log "apt-get source tor=$ver into $CACHE"
    # --download-only + dpkg-source: no patches need quilt, and no build.
    (cd "$CACHE" && apt-get source -qq --download-only "tor=$ver" \
        && dpkg-source -x --no-check "tor_${ver#*:}.dsc" "tor-$upstream" >/dev/null)
    [ -f "$SRC/configure" ] || { echo "unpacked source has no configure script" >&2; exit 1; }
}

ensure_build_deps() {
    local missing=()
    for p in libevent-dev libssl-dev zlib1g-dev pkg-config make gcc; do
        have_pkg "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# --- 2. Build only src/test/bench (perf-anchors.md §1.5 options) -------------
build_ctor() {
    if [ -x "$SRC/src/test/bench" ] && [ -f "$SRC/.oxit-link-cmd" ]; then return; fi
    if [ ! -f "$SRC/Makefile" ]; then
        log "configuring C tor (small: no docs, lzma, zstd, seccomp, scrypt, dirauth)"
        (cd "$SRC" && ./configure -q --disable-asciidoc --disable-manpage \
            --disable-html-manual --disable-lzma --disable-zstd --disable-seccomp \
            --disable-libscrypt --disable-module-dirauth >/dev/null)
    fi
    log "building src/test/bench (a few minutes on 2 cores)"
    (cd "$SRC" && make -j"$(nproc)" src/test/bench >/dev/null)
    # Remember bench's link command: the exit variant links the same libs.
    (cd "$SRC" && rm -f src/test/bench && make V=1 src/test/bench 2>&1 \
        | grep -E -- '-o src/test/bench( |$)' | tail -n1 > .oxit-link-cmd)
    [ -s "$SRC/.oxit-link-cmd" ] || { echo "could not capture bench link command" >&2; exit 1; }
}

build_exit_variant() {
    EXIT_BIN="$CACHE/ctor_exit_ops"
    if [ -x "$EXIT_BIN" ] && [ "$EXIT_BIN" -nt "$REPO/bench/ctor_exit_ops.c" ] \
        && [ "$EXIT_BIN" -nt "$SRC/libtor.a" ]; then
        return
    fi
    log "building bench/ctor_exit_ops.c against $SRC/libtor.a"
    # Same libraries as src/test/bench's link line (captured at build time).
    local libs
    libs=$(sed -e 's/.* src\/test\/bench\.o //' "$SRC/.oxit-link-cmd")
    (cd "$SRC" && gcc -O2 -g -fno-strict-aliasing -Wall -I. -Isrc -Isrc/ext \
        -Isrc/ext/trunnel -Isrc/trunnel -o "$EXIT_BIN" "$REPO/bench/ctor_exit_ops.c" $libs)
}

# --- 3. oxit's bench binary ---------------------------------------------------
build_oxit() {
    log "building oxit's cell_ops bench (cargo bench --no-run)"
    OXIT_BIN=$(cd "$REPO" && cargo bench --bench cell_ops --no-run 2>&1 \
        | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n1)
    [ -n "$OXIT_BIN" ] || { echo "cargo bench --no-run gave no executable" >&2; exit 1; }
    case $OXIT_BIN in /*) ;; *) OXIT_BIN="$REPO/$OXIT_BIN" ;; esac
}

ensure_build_deps
fetch_source
build_ctor
build_exit_variant
build_oxit
[ "$BUILD_ONLY" = 1 ] && { log "built: $SRC/src/test/bench $EXIT_BIN $OXIT_BIN"; exit 0; }

# --- 4. Run, interleaved, pinned ---------------------------------------------
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for r in $(seq 1 "$RUNS"); do
    log "run $r/$RUNS on CPU $CPU"
    taskset -c "$CPU" "$SRC/src/test/bench" cell_ops_tor1 >>"$OUT/c.txt"
    # CGO (0.4.9's relay_crypto_cgo.c); this one times on the monotonic
    # clock, pinned, with nothing else on the CPU.
    taskset -c "$CPU" "$SRC/src/test/bench" cell_ops_cgo >>"$OUT/c.txt"
    taskset -c "$CPU" "$EXIT_BIN" >>"$OUT/c.txt"
    # The fixed-iteration headline pass only (a filter matching no criterion
    # benchmark); run `cargo bench --bench cell_ops` for criterion's view.
    taskset -c "$CPU" "$OXIT_BIN" --bench '^headline-only$' 2>/dev/null >>"$OUT/o.txt"
done

# Best (lowest) ns/cell per label over the runs: CPU time only grows with
# interference from the other tenants of this machine.
best() { # file label-regex
    grep -E "$2" "$1" | sed -E 's/.*: *([0-9.]+) ns.*/\1/' | sort -g | head -n1
}
C_IN=$(best "$OUT/c.txt" '^ Inbound cells:')
C_OUT=$(best "$OUT/c.txt" '^Outbound cells:')
C_REC=$(best "$OUT/c.txt" '^exit recognized \(relay_forward\)')
C_ORIG=$(best "$OUT/c.txt" '^originate inbound')
C_ORIG2=$(best "$OUT/c.txt" '^exit originate \(relay_originate\)')
C_SHA=$(best "$OUT/c.txt" '^SHA-1 add_bytes\(509\) alone')
C_SHAD=$(best "$OUT/c.txt" '^SHA-1 add_bytes\(509\) \+ get_digest')
C_AES=$(best "$OUT/c.txt" '^AES-CTR crypt_inplace')
best_cgo() { # label-regex; C tor prints "<label>: <ns> per cell (<cpb> cpb)"
    grep -E "$1" "$OUT/c.txt" | sed -E 's/.*: *([0-9.]+) per cell.*/\1/' | sort -g | head -n1
}
C_CGO_OUT=$(best_cgo '^CGO outbound at relay:')
C_CGO_IN=$(best_cgo '^CGO inbound at relay:')
C_CGO_ORIG=$(best_cgo '^CGO originate at relay:')
o() { best "$OUT/o.txt" "^ *$1:"; }

echo
echo "cell_ops side by side, $(date -u +%Y-%m-%dT%H:%MZ), best of $RUNS, taskset -c $CPU, CPU-time clocks"
echo "CPU:     $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)," \
    "flags: $(grep -m1 -o -wE 'aes|vaes|avx512f|avx2|sha_ni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "kernel:  $(uname -r)"
echo "C tor:   $(basename "$SRC") (Debian $SRC_VER), $(openssl version)"
echo "oxit:    $(rustc --version); crates: $(cd "$REPO" && for c in aes ctr cipher sha1 digest cpufeatures; do
    awk -v n="$c" '$0=="name = \""n"\"" {getline; gsub(/"/,"",$3); printf "%s %s  ", n, $3}' Cargo.lock; done)"
echo
row() { # case, oxit, C
    awk -v n="$1" -v o="$2" -v c="$3" 'BEGIN {
        if (o == "" || c == "") { printf "%-44s %10s %10s %8s\n", n, (o==""?"-":o), (c==""?"-":c), "-"; exit }
        printf "%-44s %10.1f %10.1f %8.2f\n", n, o, c, o / c }'
}
printf "%-44s %10s %10s %8s\n" "case (ns per cell, CPU time)" "oxit" "C tor" "oxit/C"
row "middle inbound (AES only)" "$(o 'middle inbound \(AES only\)')" "$C_IN"
row "middle outbound (AES + recognized check)" "$(o 'middle outbound \(AES \+ recognized check\)')" "$C_OUT"
row "exit recognized (AES + SHA-1 + digest)" "$(o 'exit outbound recognized \(AES \+ SHA-1\)')" "$C_REC"
row "exit originate (SHA-1 + digest + AES)" "$(o 'exit inbound originate \(SHA-1 \+ AES\)')" "$C_ORIG"
row "batch8 middle inbound" "$(o 'batch8 middle inbound')" "$C_IN"
row "batch8 middle outbound" "$(o 'batch8 middle outbound')" "$C_OUT"
row "batch8 exit recognized" "$(o 'batch8 exit recognized')" "$C_REC"
row "batch8 exit originate" "$(o 'batch8 exit originate')" "$C_ORIG"
row "batch31 middle inbound" "$(o 'batch31 middle inbound')" "$C_IN"
row "batch31 middle outbound" "$(o 'batch31 middle outbound')" "$C_OUT"
row "batch31 exit recognized" "$(o 'batch31 exit recognized')" "$C_REC"
row "batch31 exit originate" "$(o 'batch31 exit originate')" "$C_ORIG"
row "8 circuits x 8 cells exit originate" "$(o '8 circuits x 8 cells exit originate')" "$C_ORIG"
row "32 circuits x 4 cells exit originate" "$(o '32 circuits x 4 cells exit originate')" "$C_ORIG"
row "8 circuits x 8 cells exit recognized" "$(o '8 circuits x 8 cells exit recognized')" "$C_REC"
row "32 circuits x 4 cells exit recognized" "$(o '32 circuits x 4 cells exit recognized')" "$C_REC"
row "SHA-1 update(509) alone" "$(o 'SHA-1 update\(509\) alone')" "$C_SHA"
row "CGO middle outbound (vs C tor CGO)" "$(o 'CGO middle outbound \(forward\)')" "$C_CGO_OUT"
row "CGO middle inbound (vs C tor CGO)" "$(o 'CGO middle inbound \(backward\)')" "$C_CGO_IN"
row "CGO exit originate (vs C tor CGO)" "$(o 'CGO exit originate')" "$C_CGO_ORIG"
row "CGO exit originate (vs C tor tor1)" "$(o 'CGO exit originate')" "$C_ORIG"
row "CGO exit recognized (vs C tor tor1)" "$(o 'CGO exit recognized')" "$C_REC"
echo
echo "C tor only: AES-CTR 509 alone $C_AES ns; SHA-1 509 + get_digest $C_SHAD ns;" \
    "tor1_crypt_relay_originate $C_ORIG2 ns (bench's 'originate inbound' is $C_ORIG)."
echo "Batched rows compare N cells per call in oxit with C tor's one cell per call (C has no batch API);"
echo "'circuits x cells' rows seal or check several circuits' cells per call (SHA-1 on SHA-NI lanes)."
echo "CGO rows: C tor's bench has no recognized-cell case; the tor1 rows are what a CGO exit must beat."
