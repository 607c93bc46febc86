"""py-api: a small JSON/HTML API server on the standard library, with optional features.

Knobs (environment): PORT, CONFIG_FORMAT=json|yaml, TEMPLATES=0|1 (jinja2 pages), GZIP=0|1,
DB=none|memory|sqlite, LOG=stdout|file, AUTH=0|1 (hmac tokens), CRASH=0|1 (bad config: exits
before ready).
"""

import json
import logging
import os
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
from common import fail_early, flag, knob, mark_ready  # noqa: E402

APP = os.path.dirname(os.path.abspath(__file__))


def load_config() -> dict:
    fmt = knob("CONFIG_FORMAT", "json")
    if flag("CRASH"):
        fail_early("config file /opt/app/conf/missing.toml not found")
    if fmt == "yaml":
        import yaml

        with open(os.path.join(APP, "conf", "api.yaml")) as f:
            return yaml.safe_load(f)
    with open(os.path.join(APP, "conf", "api.json")) as f:
        return json.load(f)


def setup_logging() -> logging.Logger:
    handler: logging.Handler
    if knob("LOG", "stdout") == "file":
        handler = logging.FileHandler("/tmp/api.log")
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("api")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def open_db():
    mode = knob("DB", "none")
    if mode == "none":
        return None
    import sqlite3

    conn = sqlite3.connect(":memory:" if mode == "memory" else "/tmp/api.db", check_same_thread=False)
    conn.execute("create table if not exists items (id integer primary key, name text, price real)")
    conn.executemany("insert into items (name, price) values (?, ?)",
                     [(f"item-{i}", i * 1.25) for i in range(200)])
    conn.commit()
    return conn


def main() -> None:
    cfg = load_config()
    log = setup_logging()
    db = open_db()
    render = None
    if flag("TEMPLATES"):
        import jinja2

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(APP, "templates")),
                                 autoescape=True)
        page = env.get_template("index.html")
        render = lambda: page.render(title=cfg["title"], routes=cfg["routes"])  # noqa: E731
    compress = None
    if flag("GZIP"):
        import gzip

        compress = gzip.compress
    signer = None
    if flag("AUTH"):
        import hashlib
        import hmac
        import secrets

        key = secrets.token_bytes(32)
        signer = lambda body: hmac.new(key, body, hashlib.sha256).hexdigest()  # noqa: E731

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # route access logs through our logger
            log.info(fmt, *args)

        def do_GET(self):
            if self.path == "/healthz":
                body, ctype = b"ok", "text/plain"
            elif self.path == "/" and render:
                body, ctype = render().encode(), "text/html"
            elif self.path == "/items" and db is not None:
                rows = db.execute("select id, name, price from items limit 20").fetchall()
                body, ctype = json.dumps(rows).encode(), "application/json"
            else:
                body, ctype = json.dumps({"service": cfg["title"], "routes": cfg["routes"]}).encode(), \
                    "application/json"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            if signer:
                self.send_header("X-Signature", signer(body))
            if compress and len(body) > 64:
                body = compress(body)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    port = int(knob("PORT", "18081"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for path in ("/healthz", "/", "/items"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            resp.read()
    mark_ready(f"port={port}")
    threading.Event().wait()


if __name__ == "__main__":
    main()
