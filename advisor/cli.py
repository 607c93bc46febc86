"""prefetch-advisor: build, evaluate and manage prefetch lists (a thin layer over the modules)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from advisor.simulate import SimParams

log = logging.getLogger(__name__)

DEFAULT_STORE = Path("out/lists")


def _add_sim_args(p: argparse.ArgumentParser) -> None:
    d = SimParams()
    p.add_argument("--rtt-ms", type=float, default=d.rtt_s * 1e3, help="registry round trip (ms)")
    p.add_argument("--bandwidth-mbps", type=float, default=d.bandwidth_Bps * 8 / 1e6, help="node link (Mbit/s)")
    p.add_argument("--chunk-kib", type=int, default=d.chunk_bytes // 1024, help="nydus chunk size (KiB)")
    p.add_argument("--concurrency", type=int, default=d.prefetch_concurrency, help="nydusd prefetch threads")
    p.add_argument("--budget-mb", type=float, default=None, help="byte budget per list (MB); default none")


def _config(args: argparse.Namespace):
    from advisor.evaluate import AdvisorConfig

    params = SimParams(rtt_s=args.rtt_ms / 1e3, bandwidth_Bps=args.bandwidth_mbps * 1e6 / 8,
                       chunk_bytes=args.chunk_kib * 1024, prefetch_concurrency=args.concurrency)
    if params.rtt_s < 0 or params.bandwidth_Bps <= 0 or params.chunk_bytes <= 0 or params.prefetch_concurrency < 1:
        raise ValueError("simulation parameters must be positive (rtt may be 0)")
    budget = float("inf") if args.budget_mb is None else args.budget_mb * 1e6
    return AdvisorConfig(params=params, budget_bytes=budget)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="prefetch-advisor", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = ap.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="build the list of every service in a corpus into the list store")
    b.add_argument("data", type=Path, help="corpus directory (data/ or data/traces/)")
    b.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"list store directory (default {DEFAULT_STORE})")
    b.add_argument("--no-progress", action="store_true")
    _add_sim_args(b)

    e = sub.add_parser("evaluate", help="held-out evaluation of every strategy")
    e.add_argument("data", type=Path)
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.add_argument("--no-progress", action="store_true")
    _add_sim_args(e)

    t = sub.add_parser("traces", help="inspect a trace corpus")
    tsub = t.add_subparsers(dest="tcmd", required=True)
    ts = tsub.add_parser("summary", help="images, services, runs, complete runs")
    ts.add_argument("data", type=Path)
    ts.add_argument("--json", action="store_true")

    ls = sub.add_parser("lists", help="show, pin or remove stored lists")
    ls.add_argument("--store", type=Path, default=DEFAULT_STORE)
    lsub = ls.add_subparsers(dest="lcmd", required=True)
    show = lsub.add_parser("show", help="services in the store, or one service's current list")
    show.add_argument("service", nargs="?")
    show.add_argument("--image", help="image digest (default: newest list of the service)")
    show.add_argument("--json", action="store_true", help="print the list's report")
    pin = lsub.add_parser("pin", help="pin a hand-made list (a file, or - for stdin) for a service and image")
    pin.add_argument("service")
    pin.add_argument("image", help="image digest or normalised image ref")
    pin.add_argument("file", help="list file: one absolute path per line")
    pin.add_argument("--name", help="pin name (default derived from service and image)")
    rm = lsub.add_parser("remove", help="remove a service's lists")
    rm.add_argument("service")
    rm.add_argument("--image")
    rm.add_argument("--scope", choices=("pin", "learned", "all"), default="all")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from advisor.traces import TraceError

    try:
        return _dispatch(args)
    except TraceError as exc:
        print(f"prefetch-advisor: bad trace corpus: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        what = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        print(f"prefetch-advisor: {' '.join(what.split())}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"prefetch-advisor: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


def _progress(args):
    if getattr(args, "no_progress", False):
        return None
    from tqdm import tqdm

    return lambda items, **kw: tqdm(items, file=sys.stderr, **kw)


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "traces":
        return _traces_summary(args)
    if args.cmd == "lists":
        return _lists(args)
    from advisor.traces import load_corpus

    cfg = _config(args)
    corpus = load_corpus(args.data)
    if corpus.synthetic:
        print("prefetch-advisor: note: this corpus is SYNTHETIC (agent_version=synthetic)", file=sys.stderr)
    if args.cmd == "build":
        from advisor.build import build_lists, store_lists
        from advisor.lists import ListStore

        built = build_lists(corpus, cfg, _progress(args))
        stored = store_lists(built, ListStore(args.store))
        for b, version in stored:
            print(f"{b.service}\t{b.image_digest}\tv{version}\t{len(b.plist)} entries\t{b.report['expected_bytes']} bytes"
                  + (f"\tskipped={dict(b.plist.skipped)}" if b.plist.skipped else ""))
        print(f"{len(stored)} list(s) in {args.store}", file=sys.stderr)
        return 0
    if args.cmd == "evaluate":
        from advisor.evaluate import evaluate, format_table

        report = evaluate(corpus, cfg, _progress(args))
        print(json.dumps(report, indent=1) if args.json else format_table(report))
        return 0
    raise ValueError(f"unknown command {args.cmd}")


def _pin_image(image: str) -> str:
    """A pin's image key: an image digest as is, else the ref normalised as the agent looks it up."""
    if image.startswith("sha256:"):
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", image):
            raise ValueError(f"{image!r} is not an image digest (sha256: and 64 hex digits)")
        return image
    from agent.imageref import try_normalize_image_ref

    normalized, err = try_normalize_image_ref(image)
    if normalized is None:
        raise ValueError(f"{image!r} is neither an image digest nor an image ref: {err}")
    return normalized


def _traces_summary(args: argparse.Namespace) -> int:
    from advisor.traces import load_corpus, summary

    s = summary(load_corpus(args.data))
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    for key in ("images", "services", "runs", "complete_runs", "incomplete_runs", "min_complete_runs_per_service",
                "access_rows", "inventory_files", "synthetic"):
        print(f"{key:<32}{s[key]}")
    print(f"\n{'service':<32}{'images':>7}{'runs':>7}{'complete':>10}")
    for svc, row in s["per_service"].items():
        print(f"{svc:<32}{row['images']:>7}{row['runs']:>7}{row['complete_runs']:>10}")
    for n in s["notes"]:
        print(f"note: {n}")
    return 0


def _lists(args: argparse.Namespace) -> int:
    from advisor.lists import ListStore, PrefetchList

    store = ListStore(args.store)
    if args.lcmd == "show":
        if not args.service:
            services = store.services()
            for svc in services:
                for s in store.pins(svc) + store.history(svc)[-1:]:
                    kind = f"pin {s.name}" if s.pinned else f"v{s.version}"
                    print(f"{svc}\t{s.image}\t{kind}\t{s.list_path}")
            if not services:
                print(f"no lists in {args.store}", file=sys.stderr)
            return 0
        s = store.latest(args.service, args.image)
        if s is None:
            raise ValueError(f"no list for service {args.service!r}" + (f" and image {args.image}" if args.image else ""))
        if args.json:
            print(json.dumps(s.report(), indent=1))
        else:
            print(f"# {s.service} {s.image} {'pin ' + str(s.name) if s.pinned else 'v' + str(s.version)} {s.list_path}", file=sys.stderr)
            sys.stdout.write(s.load().render())
        return 0
    if args.lcmd == "pin":
        image = _pin_image(args.image)
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        plist = PrefetchList.parse(data)
        if not plist.valid:
            counts = ", ".join(f"{n} {reason}" for reason, n in sorted(plist.skipped.items()))
            first = plist.rejections[0]
            raise ValueError(f"list rejected, nothing pinned: {counts} (first: {first.entry} is {first.reason})")
        if not len(plist):
            raise ValueError("the list is empty, nothing pinned (a pin wins over learned lists, so an empty one would "
                             "turn prefetch off: use `lists remove` to drop a list)")
        name = store.pin(args.service, image, plist, name=args.name)
        print(f"pinned {len(plist)} entries as {name}")
        return 0
    if args.lcmd == "remove":
        n = store.remove(args.service, args.image, scope=args.scope)
        if n == 0:
            raise ValueError(f"nothing to remove for service {args.service!r}")
        print(f"removed {n} list(s)")
        return 0
    raise ValueError(f"unknown lists command {args.lcmd}")
