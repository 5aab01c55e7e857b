#!/usr/bin/env bash
# Fuzz every parser a peer, a file or a server feeds (fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh              # 60 CPU-seconds per target
#   scripts/fuzz.sh 600          # 10 CPU-minutes per target
#   scripts/fuzz.sh 600 channel  # one target
#
# The budget is CPU time, not wall time, so that a run on a busy (or
# niced) machine still gives every target its share: each target runs in
# rounds (libFuzzer's -max_total_time is wall time) until the fuzzer's own
# user + system time reaches the budget, each round starting from the corpus
# the last one left.
#
# Needs the nightly toolchain (installed on these machines) and cargo-fuzz,
# which this script installs if missing. Each target starts from the
# committed seeds in fuzz/seeds/TARGET when there are some (captured from C
# tor and dnsmasq by scripts/fuzz-seeds.sh). The corpus grows in
# fuzz/corpus/TARGET (not committed), crashes land in fuzz/artifacts/TARGET,
# and each round's libFuzzer output in fuzz/logs/TARGET.N.log. At the end it
# prints one line per target: executions, CPU seconds, corpus size, crashes.
# Every crash found should become a unit test next to the parser it broke.
#
# Not part of CI: it runs for as long as it is told to.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
[ -x /usr/bin/time ] || apt-get install -y time
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build
mkdir -p logs
summary=()
for t in "${targets[@]}"; do
    echo "== $t: ${secs} CPU-seconds"
    mkdir -p "corpus/$t"
    rm -f logs/"$t".*.log
    extra=()
    [ -d "seeds/$t" ] && extra+=("seeds/$t")
    cpu=0 execs=0 round=0 rc=0
    while [ "$cpu" -lt "$secs" ]; do
        round=$((round + 1))
        log="logs/$t.$round.log"
        set +e
        # The fuzzer is a child of cargo: /usr/bin/time counts it.
        /usr/bin/time -f '%U %S' -o "logs/$t.$round.time" \
            cargo +nightly fuzz run "$t" "corpus/$t" "${extra[@]}" -- \
            -max_total_time="$((secs - cpu))" -print_final_stats=1 -timeout=10 \
            -rss_limit_mb=2048 >"$log" 2>&1
        rc=$?
        set -e
        used=$(awk '{printf "%d", $1 + $2}' "logs/$t.$round.time")
        n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        cpu=$((cpu + used))
        execs=$((execs + ${n:-0}))
        echo "   round $round: ${n:-?} executions, ${used} CPU-s (exit $rc)"
        # A crash ends the target: the artifact is what to look at next.
        if [ "$rc" -ne 0 ] || [ "$used" -eq 0 ]; then break; fi
    done
    crashes=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
    corpus=$(find "corpus/$t" -type f | wc -l)
    line="$t: ${execs} executions in ${cpu} CPU-s (${round} rounds), corpus ${corpus}, crashes ${crashes} (exit ${rc})"
    echo "   $line"
    summary+=("$line")
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
