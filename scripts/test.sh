#!/usr/bin/env bash
# Install what the test suite needs, then build and run all of it.
#
#   scripts/test.sh            # from anywhere inside the checkout
#
# The interop tests (tests/interop) start real programs on 127.0.0.1:
#   /usr/bin/tor          Debian package `tor`          C tor relays, authorities, clients
#   /usr/bin/tor-gencert  Debian package `tor`          authority keys of the test network
#   /usr/sbin/dnsmasq     Debian package `dnsmasq-base` a DNS server for RESOLVE
#   /usr/bin/prometheus   Debian package `prometheus`   scrapes oxit's MetricsPort, evaluates the
#                         dashboard's queries and the alert rules of tuning/ (tests/prometheus.rs;
#                         its /usr/bin/promtool checks the rules)
#   /usr/bin/nyx          Debian package `nyx`          nyx against oxit's ControlPort (tests/nyx.rs)
#   /usr/bin/tmux         Debian package `tmux`         the terminal nyx is drawn in and captured from
#   /usr/sbin/ip          Debian package `iproute2`     loopback of a test's own network
#                         namespace (tests/oom.rs; those tests need root)
#   target/debug/arti     crates.io `arti` 2.7.0        Arti as a client of the test network
#                         (workspace member tests/arti, built below)
# They fail (never skip) when these are missing, so install them first.
# Tests that need the `oxit` binary run it from the workspace target dir
# (target/debug/oxit), which `cargo build --workspace --all-targets` makes.
set -euo pipefail

cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/tor ] || missing+=(tor)
[ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/bin/nyx ] || missing+=(nyx)
[ -x /usr/bin/tmux ] || missing+=(tmux)
[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    echo "installing: ${missing[*]}"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

cargo build --workspace --all-targets

cargo test --workspace
