"""Benchmark: ~1M trace rows → every service's list, on this machine, with peak memory.

The corpus is a synthetic scale-up: the real corpus in data/ resampled with jitter (advisor.synth
.scale_up) when it exists, else the parametric model. It is written to Parquet first, then a child
process does the timed job exactly as `prefetch-advisor build` would (load + validate, features, one
model fit, rank, nydusd-valid lists), so its peak RSS is the job's alone. The base corpus is timed
the same way, side by side, and the table shows ratios.

    .venv/bin/python bench/advisor_scale.py [--rows 1000000] [--data data]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUDGET_S = 30.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(root: str) -> None:
    from advisor.build import build_lists
    from advisor.evaluate import AdvisorConfig, fit_model
    from advisor.features import build_images
    from advisor.traces import load_corpus

    t = {}
    c0 = _cpu()
    t0 = time.perf_counter()
    corpus = load_corpus(root)
    t["load_validate_s"] = time.perf_counter() - t0
    cpu_load = _cpu() - c0
    # build_lists repeats build_images and the fit; time those stages apart once, then the whole job.
    t1 = time.perf_counter()
    images = build_images(corpus)
    t["features_matrices_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    fit_model(images)
    t["model_fit_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    c3 = _cpu()
    built = build_lists(corpus, AdvisorConfig())
    t["build_lists_s"] = time.perf_counter() - t3
    t["cpu_s"] = cpu_load + _cpu() - c3
    total = t["load_validate_s"] + t["build_lists_s"]
    print(json.dumps({
        **t, "total_s": total, "rows": len(corpus.accesses), "runs": len(corpus.runs),
        "services": int(corpus.runs["service"].nunique()), "lists": len(built),
        "entries": sum(len(b.plist) for b in built),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def measure(root: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(root)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    from advisor.synth import SynthSpec, generate, parametric_rows, scale_up, write_corpus
    from advisor.traces import TraceError, load_corpus

    try:
        real = load_corpus(args.data)
        source = f"scale-up of the corpus in {args.data} ({'synthetic' if real.synthetic else 'recorded'})"
        base = (real.runs, real.accesses, real.inventory)
        runs, acc = scale_up(real.runs, real.accesses, args.rows)
        big = (runs, acc, real.inventory)
    except TraceError as exc:
        source = f"parametric synthetic model (no usable corpus in {args.data}: {exc})"
        base = generate(SynthSpec())
        big = parametric_rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(Path(tmp) / "base", *base)
        write_corpus(Path(tmp) / "big", *big)
        r_base = measure(Path(tmp) / "base")
        r_big = measure(Path(tmp) / "big")
    print(f"source: {source}; cores={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    keys = ("rows", "services", "runs", "lists", "entries", "load_validate_s", "features_matrices_s", "model_fit_s",
            "build_lists_s", "total_s", "cpu_s", "peak_rss_mb")
    print(f"{'metric':<22}{'base':>14}{'scaled':>14}{'ratio':>9}")
    for k in keys:
        a, b = r_base[k], r_big[k]
        fmt = (lambda v: f"{v:>14,.0f}") if isinstance(a, int) or k.endswith("mb") else (lambda v: f"{v:>14.2f}")
        print(f"{k:<22}{fmt(a)}{fmt(b)}{(b / a if a else float('nan')):>9.2f}")
    per_row = (r_big["total_s"] / r_big["rows"]) / (r_base["total_s"] / r_base["rows"])
    print(f"{'time per row (ratio)':<22}{'':>28}{per_row:>9.2f}")
    ok = r_big["total_s"] <= BUDGET_S and r_big["rows"] >= 0.95 * args.rows
    print(f"\n{r_big['rows']:,} rows → {r_big['lists']} lists in {r_big['total_s']:.1f} s wall "
          f"(budget {BUDGET_S:.0f} s: {'MET' if ok else 'MISSED'}), peak RSS {r_big['peak_rss_mb']:.0f} MB")
    print("total_s and cpu_s cover load+validate and build_lists (the job); the stage rows in between are "
          "timed separately. With the load average above the core count, wall time includes waiting for a core.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
