#!/usr/bin/env bash
# Whole-process wall time of `eshost exec` against the embedded SQLite store:
# warm (compiled components come from the cache) and cold (--no-cache, every
# run compiles), side by side in one run. Each run is one PurchaseItem: open
# the store, load the modules, hydrate, decide, append, commit, print.
#
#   scripts/bench-exec.sh            # 50 runs of each
#   RUNS=200 scripts/bench-exec.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-50}

cargo xtask build-guests >/dev/null 2>&1
cargo build --quiet --release -p eshost-cli
bin="$PWD/target/release/eshost"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ESHOST_MODULES="$PWD/target/modules" ESHOST_CACHE_DIR="$work/cache" DATABASE_URL="sqlite://$work/bench.db"
"$bin" exec FlashSaleItem bench CreateFlashSale '{"initialStock":1000000}' >/dev/null # fills the cache

# Prints the wall time of one command in microseconds.
time_us() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null
    end=$(date +%s%N)
    echo $(((end - start) / 1000))
}

declare -a warm cold
for i in $(seq 1 "$runs"); do
    payload="{\"buyerId\":\"b$i\",\"quantity\":1}"
    warm+=("$(time_us "$bin" exec FlashSaleItem bench PurchaseItem "$payload")")
    cold+=("$(time_us "$bin" --no-cache exec FlashSaleItem bench PurchaseItem "$payload")")
done

# Median and 90th percentile of a list of microseconds, in milliseconds.
stats() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
        printf "median %6.1f ms   p90 %6.1f ms", v[int((NR + 1) / 2)] / 1000, v[int(NR * 0.9 + 0.5)] / 1000 }'
}
echo "eshost exec, SQLite, $runs runs each ($(nproc) cores, $(date -u +%Y-%m-%d))"
echo "  warm cache: $(stats "${warm[@]}")"
echo "  no cache:   $(stats "${cold[@]}")"
