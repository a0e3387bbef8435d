#!/usr/bin/env bash
# 2,000 purchases of one item with 1,000 in stock, sent as `eshost exec` from
# 16 processes at once: on SQLite and on PostgreSQL, each alone (processes
# take turns per aggregate) and through `eshost serve` (--server). Prints, for
# each, how many commands failed, how many bought and how long it took.
#
#   scripts/exec-crowd.sh
#   PG_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/exec-crowd.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pg_url=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
processes=16
per_process=125

cargo xtask build-guests >/dev/null 2>&1
cargo build --quiet --release -p eshost-cli
bin="$PWD/target/release/eshost"
work=$(mktemp -d)
server_pid=
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
export ESHOST_MODULES="$PWD/target/modules" ESHOST_CACHE_DIR="$work/cache"
unset ESHOST_SERVER

# run NAME DATABASE_URL [SERVER_URL]
run() {
    local name=$1 url=$2 server=${3:-} item
    item="crowd-$(date +%s%N)"
    local client=("$bin" --database-url "$url") remote=()
    [ -n "$server" ] && remote=(--server "$server")
    "${client[@]}" exec FlashSaleItem "$item" CreateFlashSale '{"initialStock":1000}' "${remote[@]}" >/dev/null
    local start end
    start=$(date +%s%N)
    local pids=()
    for p in $(seq 1 $processes); do
        (
            for n in $(seq 1 $per_process); do
                "${client[@]}" exec FlashSaleItem "$item" PurchaseItem \
                    "{\"buyerId\":\"p$p-$n\",\"quantity\":1}" "${remote[@]}" >/dev/null 2>>"$work/errors-$p" ||
                    echo x >>"$work/failed-$p"
            done
        ) &
        pids+=($!)
    done
    # Only the senders: a plain `wait` would also wait for the server.
    wait "${pids[@]}"
    end=$(date +%s%N)
    local failed bought
    failed=$( (cat "$work"/failed-* 2>/dev/null || true) | wc -l)
    bought=$("$bin" --database-url "$url" events FlashSaleItem "$item" | grep -c '"ItemPurchased"' || true)
    rm -f "$work"/failed-* "$work"/errors-*
    printf '  %-28s failed %5d   bought %5d of 1000   %6.1f s\n' "$name" "$failed" "$bought" \
        "$(awk "BEGIN { print ($end - $start) / 1e9 }")"
}

# serve DATABASE_URL: starts a server, sets $server_url.
serve() {
    "$bin" --database-url "$1" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
    server_pid=$!
    for _ in $(seq 1 100); do
        server_url=$(sed -n 's/^eshost listening on //p' "$work/serve.out")
        [ -n "$server_url" ] && return
        sleep 0.1
    done
    echo "the server did not start: $(cat "$work/serve.err")" >&2
    exit 1
}

stop() {
    kill -TERM "$server_pid" && wait "$server_pid" || true
    server_pid=
}

echo "2,000 purchases (16 processes x 125), one item, 1,000 in stock ($(nproc) cores, $(date +%F))"
run "sqlite, exec alone" "sqlite://$work/crowd.db"
serve "sqlite://$work/crowd.db"
run "sqlite, exec --server" "sqlite://$work/crowd.db" "$server_url"
stop
run "postgres, exec alone" "$pg_url"
serve "$pg_url"
run "postgres, exec --server" "$pg_url" "$server_url"
stop
