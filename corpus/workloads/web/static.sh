#!/bin/sh
# web-static: nginx serving /opt/app/site with a config assembled from knobs, probed until it answers.
# Knobs: PORT, WORKERS=1|2, GZIP=on|off, MODULES="image_filter xslt stream" (subset), ACCESS_LOG=on|off,
# SENDFILE=on|off, CRASH=0|1 (config error: nginx -t fails, exit before ready).
set -eu
PORT="${PORT:-18080}"
conf=/tmp/nginx
mkdir -p "$conf" /tmp/nginx/client_body
{
  echo "worker_processes ${WORKERS:-1};"
  echo "pid /tmp/nginx/nginx.pid;"
  echo "error_log stderr warn;"
  for m in ${MODULES:-}; do
    case "$m" in
      image_filter) echo "load_module /usr/lib/nginx/modules/ngx_http_image_filter_module.so;" ;;
      xslt) echo "load_module /usr/lib/nginx/modules/ngx_http_xslt_filter_module.so;" ;;
      stream) echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;" ;;
    esac
  done
  echo "events { worker_connections 256; }"
  case " ${MODULES:-} " in *" stream "*)
    echo "stream { server { listen 127.0.0.1:$((PORT + 1000)); return \"stream-ok\\n\"; } }" ;;
  esac
  echo "http {"
  echo "  include /etc/nginx/mime.types;"
  echo "  default_type application/octet-stream;"
  echo "  client_body_temp_path /tmp/nginx/client_body;"
  echo "  sendfile ${SENDFILE:-on};"
  echo "  gzip ${GZIP:-off};"
  if [ "${ACCESS_LOG:-off}" = on ]; then echo "  access_log /tmp/nginx/access.log;"; else echo "  access_log off;"; fi
  [ "${CRASH:-0}" = 1 ] && echo "  this_directive_does_not_exist on;"
  echo "  server {"
  echo "    listen 127.0.0.1:$PORT;"
  echo "    root /opt/app/site;"
  echo "    location = /healthz { return 200 'ok'; }"
  case " ${MODULES:-} " in *" image_filter "*)
    echo "    location /thumb/ { alias /opt/app/site/img/; image_filter resize 16 16; }" ;;
  esac
  case " ${MODULES:-} " in *" xslt "*)
    echo "    location /feed { alias /opt/app/site/feed.xml; default_type text/xml; xslt_stylesheet /opt/app/site/feed.xsl; }" ;;
  esac
  echo "  }"
  echo "}"
} > "$conf/nginx.conf"
if ! nginx -t -q -c "$conf/nginx.conf"; then
  echo "FATAL nginx config test failed" >&2
  exit 3
fi
nginx -c "$conf/nginx.conf" -g 'daemon off;' &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' TERM INT
paths="/healthz / /css/site.css /js/app.js"
case " ${MODULES:-} " in *" image_filter "*) paths="$paths /thumb/logo.png" ;; esac
case " ${MODULES:-} " in *" xslt "*) paths="$paths /feed" ;; esac
/opt/app/probe.pl "$PORT" $paths
echo "ready after nginx answered $paths" > /tmp/ready.tmp && mv /tmp/ready.tmp "${READY_FILE:-/tmp/ready}"
echo READY
wait $pid
