#!/usr/bin/env bash
# The capacity benchmark: oxit (io_uring, epoll) and C tor 0.4.9, one after
# the other in every scenario, each driven by oxit-load on this machine.
#
#   bench/run.sh                          # everything, ~15 min on 2 cores
#   bench/run.sh --quick                  # shorter runs, smaller sizes
#   bench/run.sh --scenarios bulk-down,middle --relays uring,ctor
#   bench/run.sh --help                   # every knob
#
# The relay runs on CPU 0 and the generator on CPU 1. Results: a Markdown
# table on stdout; bench/results/latest.json (schema in bench/README.md)
# and bench/results/{throughput,cpu_per_gib}.png (--out DIR elsewhere).
# Run it after the README's test command (which installs tor); it adds
# the font the plots use when it is missing. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    echo "installing: fonts-dejavu-core (the plots' font)" >&2
    $sudo apt-get update >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fonts-dejavu-core >&2
fi
command -v tor > /dev/null || { echo "bench/run.sh: tor is missing; run scripts/test.sh first" >&2; exit 1; }

cargo build --release --package oxit --bin oxit >&2
cargo build --release --package oxit-load >&2
exec target/release/oxit-bench "$@"
