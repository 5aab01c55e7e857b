#!/usr/bin/env bash
# Capture seed corpora for the fuzz targets from real software (a C tor
# relay and dnsmasq on 127.0.0.1) into fuzz/seeds/, which scripts/fuzz.sh
# adds to each target's corpus. The seeds are committed; run this again
# when the capture should change (a new C tor, new cases in the example).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/bin/tor ] || { echo "needs the Debian package tor" >&2; exit 1; }
[ -x /usr/sbin/dnsmasq ] || { echo "needs the Debian package dnsmasq-base" >&2; exit 1; }
cargo run -q -p oxit-interop --example capture_seeds -- fuzz/seeds
