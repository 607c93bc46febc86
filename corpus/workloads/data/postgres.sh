#!/bin/sh
# data-postgres: PostgreSQL 15 either on first boot (initdb a fresh cluster) or from the cluster baked
# into the image, then a schema and sample rows are loaded.
# Knobs: PORT, MODE=fresh|baked, CHECKSUMS=0|1 (initdb --data-checksums), SHARED_BUFFERS, ROWS,
# EXTENSIONS="hstore pgcrypto pg_trgm" (subset created), CRASH=0|1 (bad setting: exits before ready).
set -eu
PORT="${PORT:-15432}"
BIN=/usr/lib/postgresql/15/bin
if [ "${MODE:-fresh}" = fresh ]; then
  DATA=/tmp/pgdata
  install -d -o postgres -g postgres -m 700 "$DATA"
  opts="-E UTF8 --locale=C -A trust -U postgres"
  [ "${CHECKSUMS:-0}" = 1 ] && opts="$opts --data-checksums"
  runuser -u postgres -- $BIN/initdb -D "$DATA" $opts >/tmp/initdb.log
  CONF=""
else
  DATA=/var/lib/postgresql/15/main
  CONF="-c config_file=/etc/postgresql/15/main/postgresql.conf -c hba_file=/tmp/pg_hba.conf"
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' > /tmp/pg_hba.conf
  chown postgres /tmp/pg_hba.conf
fi
extra=""
[ "${CRASH:-0}" = 1 ] && extra="-c shared_buffers=bogus"
runuser -u postgres -- $BIN/postgres -D "$DATA" $CONF -c port="$PORT" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories=/tmp -c shared_buffers="${SHARED_BUFFERS:-32MB}" -c ssl=off \
  -c external_pid_file=/tmp/postgres.pid $extra &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid' TERM INT
i=0
until $BIN/pg_isready -q -U postgres -h /tmp -p "$PORT"; do
  i=$((i + 1))
  if ! kill -0 $pid 2>/dev/null || [ $i -gt 300 ]; then echo "FATAL postgres did not come up"; exit 3; fi
  sleep 0.05
done
sql="CREATE TABLE IF NOT EXISTS orders (id int primary key, region text, amount numeric);
INSERT INTO orders SELECT g, (ARRAY['n','s','e','w'])[1 + g % 4], g * 1.5
  FROM generate_series(1, ${ROWS:-1000}) g ON CONFLICT DO NOTHING;
CREATE INDEX IF NOT EXISTS orders_region ON orders (region);
ANALYZE orders;"
for e in ${EXTENSIONS:-}; do sql="$sql CREATE EXTENSION IF NOT EXISTS $e;"; done
echo "$sql" | runuser -u postgres -- $BIN/psql -q -h /tmp -p "$PORT" -v ON_ERROR_STOP=1 -d postgres >/dev/null
runuser -u postgres -- $BIN/psql -q -h /tmp -p "$PORT" -d postgres -tAc "SELECT region, count(*) FROM orders GROUP BY 1" >/dev/null
echo ready > /tmp/ready.tmp && mv /tmp/ready.tmp "${READY_FILE:-/tmp/ready}"
echo READY
wait $pid
