#!/usr/bin/env bash
# Install what the test suite needs, then build and run all of it.
#
#   scripts/test.sh            # from anywhere inside the checkout
#
# The interop tests (tests/interop) start real programs on 127.0.0.1:
#   /usr/bin/tor          Debian package `tor`          C tor relays, authorities, clients
#   /usr/bin/tor-gencert  Debian package `tor`          authority keys of the test network
#   /usr/sbin/dnsmasq     Debian package `dnsmasq-base` a DNS server for RESOLVE
#   target/arti/bin/arti  crates.io `arti` (pinned)     Arti as a client of the test network
# They fail (never skip) when these are missing, so install them first.
# Tests that need the `oxit` binary run it from the workspace target dir
# (target/debug/oxit), which `cargo build --workspace --all-targets` makes.
set -euo pipefail

cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/tor ] || missing+=(tor)
[ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    echo "installing: ${missing[*]}"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Arti, pinned, in release mode, once (the binary is kept in target/arti).
# rustls and a bundled SQLite: no system library needed beyond a C
# compiler. Optimisation level 1 keeps the build to a few minutes on two
# cores; the tests need a working client, not a fast one. It builds in the
# background while the workspace builds.
ARTI_VERSION=2.7.0
arti_pid=""
if [ ! -x target/arti/bin/arti ] || ! target/arti/bin/arti --version 2>/dev/null | grep -q "Arti $ARTI_VERSION"; then
    mkdir -p target
    echo "building arti $ARTI_VERSION in the background (log: target/arti-build.log)"
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_INCREMENTAL=false \
        cargo install arti --version "=$ARTI_VERSION" --locked --no-default-features \
        --features tokio,rustls-ring,static-sqlite \
        --root target/arti --target-dir target/arti-build >target/arti-build.log 2>&1 &
    arti_pid=$!
fi

cargo build --workspace --all-targets

if [ -n "$arti_pid" ]; then
    if ! wait "$arti_pid"; then
        tail -n 40 target/arti-build.log
        echo "building arti $ARTI_VERSION failed (target/arti-build.log)" >&2
        exit 1
    fi
fi

cargo test --workspace
