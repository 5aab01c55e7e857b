#!/usr/bin/env bash
# Fuzz every parser a peer, a file or a server feeds (fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh              # 60 s per target
#   scripts/fuzz.sh 600          # 10 minutes per target
#   scripts/fuzz.sh 600 channel  # one target
#
# Needs the nightly toolchain (installed on these machines) and cargo-fuzz,
# which this script installs if missing. Each target starts from the
# committed seeds in fuzz/seeds/TARGET when there are some (captured from C
# tor and dnsmasq by scripts/fuzz-seeds.sh). The corpus grows in
# fuzz/corpus/TARGET (not committed), crashes land in fuzz/artifacts/TARGET,
# and each target's libFuzzer output in fuzz/logs/TARGET.log. At the end it
# prints one line per target: executions, corpus size, crashes. Every crash
# found should become a unit test next to the parser it broke.
#
# Not part of CI: it runs for as long as it is told to.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
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
    echo "== $t: ${secs} s"
    mkdir -p "corpus/$t"
    extra=()
    [ -d "seeds/$t" ] && extra+=("seeds/$t")
    set +e
    cargo +nightly fuzz run "$t" "corpus/$t" "${extra[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"logs/$t.log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    crashes=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
    corpus=$(find "corpus/$t" -type f | wc -l)
    line="$t: ${execs:-?} executions in ${secs} s, corpus ${corpus}, crashes ${crashes} (exit ${rc})"
    echo "   $line"
    summary+=("$line")
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
