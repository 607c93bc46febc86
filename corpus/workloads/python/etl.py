"""py-etl: a pandas batch job. Generates its input, loads and transforms it, writes a result.

Ready = input loaded and transformed in memory (the job's startup); then it writes and exits 0.
Knobs: ROWS, SEED, COMPRESSION=none|gzip|bz2|xz, PARSE_DATES=0|1, TZ_CONVERT=0|1,
OUTPUT=csv|json|sqlite|html, PIVOT=0|1, CRASH=0|1 (corrupt input: exits before ready).
"""

import csv
import os
import random
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import fail_early, flag, knob, mark_ready  # noqa: E402

OPENERS = {"none": open}


def opener(kind: str):
    if kind == "gzip":
        import gzip

        return gzip.open
    if kind == "bz2":
        import bz2

        return bz2.open
    if kind == "xz":
        import lzma

        return lzma.open
    return open


def write_input(path: str, rows: int, seed: int, kind: str) -> None:
    rng = random.Random(seed)
    regions = ["north", "south", "east", "west", "central"]
    with opener(kind)(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "region", "sku", "qty", "price"])
        for i in range(rows):
            w.writerow([f"2026-0{1 + i % 9}-{1 + i % 28:02d} {i % 24:02d}:00:00", rng.choice(regions),
                        f"sku-{rng.randrange(500)}", rng.randrange(1, 20), round(rng.uniform(1, 99), 2)])
        if flag("CRASH"):
            f.write('"unterminated,\n')


def main() -> None:
    rows = int(knob("ROWS", "5000"))
    kind = knob("COMPRESSION", "none")
    suffix = {"none": "", "gzip": ".gz", "bz2": ".bz2", "xz": ".xz"}[kind]
    src = f"/tmp/sales.csv{suffix}"
    write_input(src, rows, int(knob("SEED", "1")), kind)

    import pandas as pd

    kwargs = {"compression": None if kind == "none" else kind}
    if flag("PARSE_DATES"):
        kwargs["parse_dates"] = ["ts"]
    try:
        df = pd.read_csv(src, **kwargs)
    except Exception as exc:  # the corrupt-input run ends here, before ready
        fail_early(f"cannot parse {src}: {exc.__class__.__name__}")
    if flag("CRASH"):
        fail_early("input failed validation")
    df["revenue"] = df["qty"] * df["price"]
    if flag("TZ_CONVERT"):
        ts = pd.to_datetime(df["ts"])
        df["ts_local"] = ts.dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")
        df["hour"] = df["ts_local"].dt.hour
    summary = df.groupby("region").agg(orders=("sku", "count"), revenue=("revenue", "sum"))
    if flag("PIVOT"):
        pivot = df.pivot_table(index="region", columns="qty", values="revenue", aggfunc="sum")
        summary = summary.join(pivot.fillna(0).iloc[:, :3].add_prefix("q"))
    mark_ready(f"rows={len(df)}")

    out = knob("OUTPUT", "csv")
    if out == "csv":
        summary.to_csv("/tmp/summary.csv")
    elif out == "json":
        summary.to_json("/tmp/summary.json", orient="table")
    elif out == "sqlite":
        import sqlite3

        with sqlite3.connect("/tmp/summary.db") as conn:
            summary.to_sql("summary", conn, if_exists="replace")
    elif out == "html":
        summary.to_html("/tmp/summary.html")
    print(summary.head(), flush=True)


if __name__ == "__main__":
    main()
