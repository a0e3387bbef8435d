#!/usr/bin/env bash
# Loads one long flash-sale stream with no snapshot, through the binary, and
# prints the wall time and the process's peak RSS. The stream is written
# straight into PostgreSQL with SQL (a sale of STOCK items, STOCK purchases,
# then rejections up to EVENTS, each with the metadata a real append
# records), in a schema of its own that is dropped afterwards.
#
#   scripts/long-stream.sh                  # 1,000,000 events, stock 100,000
#   EVENTS=10000000 scripts/long-stream.sh
#   STOCK=500000 scripts/long-stream.sh
#   DATABASE_URL=postgres://... scripts/long-stream.sh
#   ESHOST_BIN=/tmp/eshost-old scripts/long-stream.sh   # another build
#   MODULES=target/modules-ts scripts/long-stream.sh    # the TypeScript guest
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-1000000}
server=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
schema=long_stream_$$

cargo xtask build-guests >/dev/null 2>&1
if [[ -z ${ESHOST_BIN:-} ]]; then
    cargo build --quiet --release -p eshost-cli
fi
bin=${ESHOST_BIN:-$PWD/target/release/eshost}

psql -q "$server" -c "CREATE SCHEMA $schema"
trap 'psql -q "$server" -c "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE"' EXIT
separator='?'
[[ $server == *\?* ]] && separator='&'
export DATABASE_URL="$server${separator}options=-c%20search_path%3D$schema"
export ESHOST_MODULES="$PWD/${MODULES:-target/modules}"
"$bin" migrate >/dev/null 2>&1

stock=${STOCK:-100000}
echo "writing $events events ..."
started=$(date +%s)
psql -q "$server" <<SQL
SET search_path = $schema;
SET synchronous_commit = off;
-- The schema holds this stream only, so its sequence numbers serve as
-- global positions too.
INSERT INTO events (position, aggregate_name, aggregate_id, sequence_number, event_name, payload, metadata)
SELECT n, 'FlashSaleItem', 'long', n,
       CASE WHEN n = 1 THEN 'FlashSaleCreated'
            WHEN n <= $stock + 1 THEN 'ItemPurchased'
            ELSE 'PurchaseRejected' END,
       CASE WHEN n = 1 THEN jsonb_build_object('itemId', 'long', 'initialStock', $stock)
            WHEN n <= $stock + 1 THEN jsonb_build_object('buyerId', 'buyer-' || n, 'quantity', 1)
            ELSE jsonb_build_object('buyerId', 'buyer-' || n, 'reason', 'out_of_stock') END,
       jsonb_build_object('commandId', md5(n::text), 'correlationId', md5(n::text),
                          'causationId', md5(n::text), 'aggregateVersion', '0.1.0',
                          'componentDigest', repeat('ab', 32))
FROM generate_series(1, $events) AS n;
SQL
echo "written in $(($(date +%s) - started)) s; loading with eshost state ..."

status=0
/usr/bin/time -f '%e %M' -o "/tmp/$schema.time" \
    "$bin" --snapshot-every 0 state FlashSaleItem long >"/tmp/$schema.state" || status=$?
read -r seconds rss_kib < <(tail -1 "/tmp/$schema.time")
sold=$(grep -o '"sold":[0-9]*' "/tmp/$schema.state" || echo "FAILED (exit $status)")
rm -f "/tmp/$schema.time" "/tmp/$schema.state"
printf '%s events: loaded in %s s, peak RSS %d MB, state %s\n' \
    "$events" "$seconds" $((rss_kib / 1024)) "$sold"

/usr/bin/time -f '%e %M' -o "/tmp/$schema.time" \
    "$bin" events FlashSaleItem long >"/tmp/$schema.events"
read -r seconds rss_kib <"/tmp/$schema.time"
lines=$(wc -l <"/tmp/$schema.events")
rm -f "/tmp/$schema.time" "/tmp/$schema.events"
printf '%s events: eshost events printed %s lines in %s s, peak RSS %d MB\n' \
    "$events" "$lines" "$seconds" $((rss_kib / 1024))
