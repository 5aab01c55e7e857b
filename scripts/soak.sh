#!/usr/bin/env bash
# Soak: oxit (release build, io_uring) as an exit behind a C tor middle on
# 127.0.0.1, under mixed load for SECONDS (default 3600): circuits built and
# torn down continually, streams to destinations that answer, reset, stall
# or trickle, names that resolve, fail or never get an answer. Samples RSS,
# file descriptors and CPU every 5 s, then plots them.
#
#   scripts/soak.sh [SECONDS] [OUTDIR]    # default 3600, soak-results/
#
# Writes OUTDIR/soak.csv, OUTDIR/soak.png and OUTDIR/summary.txt. Passes
# when oxit logged no panic and exited cleanly, its file descriptors are
# back to the start (within 10: the resolver keeps a pool of 8 sockets per
# nameserver once it has been used), and its RSS at the end is within 20 % (or
# 16 MiB) of the RSS after warm-up (a quarter of the run). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-3600}"
out="${2:-soak-results}"
mkdir -p "$out"

need=()
[ -x /usr/bin/tor ] || need+=(tor)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

cargo build --release --bin oxit
cargo build --release -p oxit-interop --example soak
OXIT_BIN="$PWD/target/release/oxit" ./target/release/examples/soak "$secs" "$out/soak.csv" \
    | tee "$out/summary.txt"

gnuplot <<GP
set terminal png size 1100,700
set output "$out/soak.png"
set datafile separator ","
set key autotitle columnhead
set multiplot layout 3,1 title "oxit soak: ${secs} s under mixed load"
set xlabel "seconds"
set ylabel "RSS (MiB)"
plot "$out/soak.csv" using 1:2 with lines lw 2 title "RSS"
set ylabel "file descriptors"
plot "$out/soak.csv" using 1:3 with lines lw 2 title "fds"
set ylabel "CPU (%)"
plot "$out/soak.csv" using 1:4 with lines lw 2 title "CPU"
unset multiplot
GP

get() { awk -v k="$1" '$1 == k { print $2 }' "$out/summary.txt"; }
fail=0
[ "$(get panic)" = "false" ] || { echo "FAIL: oxit panicked"; fail=1; }
[ "$(get clean_exit)" = "true" ] || { echo "FAIL: oxit did not exit cleanly"; fail=1; }
[ "$(get fds_end)" -le $(( $(get fds_start) + 10 )) ] \
    || { echo "FAIL: $(get fds_end) fds at the end, $(get fds_start) at the start"; fail=1; }
warm=$(get rss_after_warmup_mib)
end=$(get rss_end_mib)
slack=$(( warm / 5 > 16 ? warm / 5 : 16 ))
[ "$end" -le $(( warm + slack )) ] \
    || { echo "FAIL: RSS grew from $warm MiB after warm-up to $end MiB"; fail=1; }
echo "plot: $out/soak.png"
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
