"""Build the learned list of every (service, image digest) in a corpus and store it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from advisor import __version__
from advisor.evaluate import DIRECTORY_DECISION_RUNS, AdvisorConfig, directory_choice, fit_model, held_out, learned_rankings
from advisor.features import build_images
from advisor.lists import ImageInventory, ListStore, PrefetchList
from advisor.rank import DirStats, collapse_directories, directory_table
from advisor.traces import Corpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltList:
    service: str
    image_digest: str
    plist: PrefetchList
    report: dict


def build_lists(corpus: Corpus, cfg: AdvisorConfig = AdvisorConfig(), progress=None) -> list[BuiltList]:
    """One list per (service, image digest), from one model trained on every run of the corpus.

    A list whose nearly fully listed leaf directories could become directory entries gets them only
    when that service's latest held-out runs start faster with them (evaluate.directory_choice).
    Nothing is written here: the caller stores the lists only once all of them are built, so a
    failure part-way leaves no partial output.
    """
    images = build_images(corpus, cfg.incomplete_weight)
    model = fit_model(images)
    groups = [(d, s) for d, img in images.items() for s in img.services]
    it = progress(groups, desc="build", unit="list") if progress else groups
    refs = corpus.runs.groupby(["service", "image_digest"])["image_ref_normalized"].last()
    rankings: dict[tuple[str, str], pd.DataFrame] = {}
    collapsed: dict[tuple[str, str], pd.DataFrame] = {}
    dir_tables: dict[str, dict[str, DirStats]] = {}
    for digest, service in it:
        svc = images[digest].services[service]
        ranked = learned_rankings(model, images[digest], svc, np.array([svc.n]), cfg)[svc.n]
        rankings[(digest, service)] = ranked
        chosen = ranked.loc[ranked["include"]]
        if digest not in dir_tables:
            dir_tables[digest] = directory_table(corpus.files.loc[corpus.files["image_digest"] == digest])
        listed = collapse_directories(chosen["path"].to_numpy(), chosen["size"].to_numpy(), dir_tables[digest])
        if listed["is_dir"].any():
            collapsed[(digest, service)] = listed
    # Only lists that would hold a directory entry need the held-out comparison.
    dirs = directory_choice(held_out(corpus, cfg, ("learned", "learned_dirs"), progress, groups=set(collapsed),
                                     last_runs=DIRECTORY_DECISION_RUNS).per_run) if collapsed else {}
    inventories: dict[str, ImageInventory] = {}
    out = []
    for digest, service in groups:
        svc = images[digest].services[service]
        ranked = rankings[(digest, service)]
        chosen = ranked.loc[ranked["include"]]
        if digest not in inventories:
            inventories[digest] = ImageInventory.from_frame(corpus.inventory.loc[corpus.inventory["image_digest"] == digest])
        choice = dirs.get((service, digest)) or {
            "use": False, "held_out_runs": 0,
            "why": "no directory qualifies" if (digest, service) not in collapsed else "no held-out run"}
        entries = _entries(chosen)
        if choice["use"]:
            entries = _collapse_entries(entries, collapsed[(digest, service)])
        plist, entries = _list_with_report(entries, inventories[digest])
        if plist.skipped:
            log.warning("event=list_entries_skipped service=%s image=%s reasons=%s", service, digest, dict(plist.skipped))
        incomplete = [str(r) for r, c in zip(svc.run_ids, svc.complete) if not c]
        report = {
            "advisor_version": __version__,
            "synthetic_data": corpus.synthetic,
            "image_ref": _str_or_none(refs.get((service, digest))),
            "history_runs": int(svc.n),
            "complete_runs": int(svc.complete.sum()),
            "incomplete_runs_downweighted": {"weight": cfg.incomplete_weight, "run_ids": incomplete},
            "candidates": int(len(ranked)),
            "expected_bytes": int(sum(e["size"] for e in entries)),
            "config": cfg.as_dict(),
            "skipped": dict(plist.skipped),
            "directory_entries": {**choice, "entries": sum(1 for e in entries if e.get("directory"))},
            "entries": entries,
            "excluded_top": _entries(ranked.loc[~ranked["include"]].sort_values("p", ascending=False).head(20)),
        }
        out.append(BuiltList(service, digest, plist, report))
    return out


def _str_or_none(v) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or pd.isna(v) else str(v)


def _entries(df: pd.DataFrame) -> list[dict]:
    return [
        {"path": p, "size": int(s), "p_need": round(float(pn), 4), "p_model": round(float(pm), 4),
         "expected_first_ms": round(float(t), 3),
         "order_key_ms": round(float(o), 3), "benefit_s": round(float(b), 6), "cost_s": round(float(c), 6),
         "score_s": round(float(n), 6)}
        for p, s, pn, pm, t, o, b, c, n in zip(df["path"], df["size"], df["p"], df["p_model"], df["t_ms"], df["order_key_ms"],
                                           df["benefit_s"], df["cost_s"], df["net_s"])
    ]


def _list_with_report(entries: list[dict], inventory: ImageInventory) -> tuple[PrefetchList, list[dict]]:
    """The list, and the report entries of exactly its lines (canonical paths; skipped ones left out)."""
    plist = PrefetchList(inventory=inventory)
    kept = []
    for e in entries:
        n = len(plist)
        if plist.add(e["path"]) is None and len(plist) > n:
            kept.append({**e, "path": plist.entries[-1]})
    return plist, kept


def _collapse_entries(entries: list[dict], listed: pd.DataFrame) -> list[dict]:
    """Report entries in list order after directory collapse; a directory sums its files' figures."""
    by_dir: dict[str, list[dict]] = {}
    for e in entries:
        by_dir.setdefault(e["path"].rpartition("/")[0], []).append(e)
    by_path = {e["path"]: e for e in entries}
    out = []
    for path, size, is_dir in zip(listed["path"], listed["size"], listed["is_dir"]):
        if not is_dir:
            out.append(by_path[path])
            continue
        members = by_dir[path]
        out.append({
            "path": path, "size": int(size), "directory": True, "files_listed": len(members),
            "p_need": max(m["p_need"] for m in members), "p_model": max(m["p_model"] for m in members),
            "expected_first_ms": min(m["expected_first_ms"] for m in members),
            "order_key_ms": members[0]["order_key_ms"],
            **{k: round(sum(m[k] for m in members), 6) for k in ("benefit_s", "cost_s", "score_s")},
        })
    return out


def store_lists(built: list[BuiltList], store: ListStore) -> list[tuple[BuiltList, int]]:
    return [(b, store.put(b.service, b.image_digest, b.plist, b.report)) for b in built]
