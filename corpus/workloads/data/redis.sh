#!/bin/sh
# data-redis: redis-server with a config assembled from knobs, optionally preloaded, then pinged.
# Knobs: PORT, APPENDONLY=yes|no, SAVE="" or "60 1000", MAXMEMORY_POLICY, PRELOAD=<keys> (0 = none),
# LUA=0|1 (load and run a script), IO_THREADS=1|2, CRASH=0|1 (bad config value: exits before ready).
set -eu
PORT="${PORT:-16379}"
mkdir -p /tmp/redis
cat > /tmp/redis/redis.conf <<CONF
bind 127.0.0.1
port $PORT
dir /tmp/redis
daemonize no
appendonly ${APPENDONLY:-no}
save "${SAVE:-}"
maxmemory 64mb
maxmemory-policy ${MAXMEMORY_POLICY:-noeviction}
io-threads ${IO_THREADS:-1}
CONF
[ "${CRASH:-0}" = 1 ] && echo "maxmemory-policy sometimes" >> /tmp/redis/redis.conf
redis-server /tmp/redis/redis.conf &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' TERM INT
i=0
until [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ]; do
  i=$((i + 1))
  if ! kill -0 $pid 2>/dev/null || [ $i -gt 200 ]; then echo "FATAL redis did not come up"; exit 3; fi
  sleep 0.05
done
if [ "${PRELOAD:-0}" -gt 0 ]; then
  seq 1 "$PRELOAD" | sed 's/.*/SET key:& value-&/' | redis-cli -p "$PORT" --pipe >/dev/null
fi
if [ "${LUA:-0}" = 1 ]; then
  redis-cli -p "$PORT" EVAL "return redis.call('DBSIZE')" 0 >/dev/null
fi
redis-cli -p "$PORT" INFO keyspace >/dev/null
echo ready > /tmp/ready.tmp && mv /tmp/ready.tmp "${READY_FILE:-/tmp/ready}"
echo READY
wait $pid
