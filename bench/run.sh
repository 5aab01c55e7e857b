#!/usr/bin/env bash
# Whole-relay comparison on loopback: downloads through a C tor middle and
# an exit that is oxit (io_uring, then epoll) or C tor, in one run. Prints
# throughput and the exit's CPU seconds per GiB, with the oxit/C ratio.
#
#   bench/run.sh                 # 4 streams x 64 MiB per exit
#   MIB=256 STREAMS=8 bench/run.sh
#   ROLE=middle bench/run.sh     # first hop in front of a C tor exit, with
#                                # a circuit spliced across workers
#
# Needs tor and dnsmasq-base (scripts/test.sh installs them). The client, the
# middle and the exits share this machine's cores, so compare CPU per GiB and
# ratios from one run, not absolute throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin oxit
# The client (Arti's tor-proto) is built in debug: a release build of it
# takes long, and its speed changes throughput, not the exit's CPU per GiB.
cargo build -p oxit-interop --example throughput
OXIT_BIN="$PWD/target/release/oxit" exec target/debug/examples/throughput
