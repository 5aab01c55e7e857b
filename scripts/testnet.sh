#!/usr/bin/env bash
# Try oxit locally: a private Tor network on 127.0.0.1, with oxit as its exit.
#
#   scripts/testnet.sh                  # io_uring backend, until Ctrl-C
#   scripts/testnet.sh --backend epoll
#   scripts/testnet.sh --keep           # keep the logs and data directories
#
# Starts three C tor 0.4.9 directory authorities, three C tor relays, oxit,
# a C tor client with a SOCKS port, dnsmasq and a small HTTP server, all on
# 127.0.0.1 and all with this network's own authorities (nothing contacts
# the live Tor network). Once the consensus lists oxit and the client has
# bootstrapped, it prints a curl command that downloads through the client,
# which picks oxit as its exit by itself. Ctrl-C stops every process it
# started, by PID. It is the same network the end-to-end tests use
# (tests/interop/tests/testnet.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/tor ] || missing+=(tor)
[ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

cargo build --release --bin oxit
cargo build --release -p oxit-interop --bin oxit-testnet
OXIT_BIN="$PWD/target/release/oxit" exec target/release/oxit-testnet "$@"
