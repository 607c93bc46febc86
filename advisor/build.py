"""Build the learned list of every (service, image digest) in a corpus and store it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from advisor import __version__
from advisor.evaluate import AdvisorConfig, fit_model, learned_rankings
from advisor.features import build_images
from advisor.lists import ImageInventory, ListStore, PrefetchList
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

    Nothing is written here: the caller stores the lists only once all of them are built, so a
    failure part-way leaves no partial output.
    """
    images = build_images(corpus, cfg.incomplete_weight)
    model = fit_model(images)
    groups = [(d, s) for d, img in images.items() for s in img.services]
    it = progress(groups, desc="build", unit="list") if progress else groups
    refs = corpus.runs.groupby(["service", "image_digest"])["image_ref_normalized"].last()
    inventories: dict[str, ImageInventory] = {}
    out = []
    for digest, service in it:
        img = images[digest]
        svc = img.services[service]
        ranked = learned_rankings(model, img, svc, np.array([svc.n]), cfg)[svc.n]
        chosen = ranked.loc[ranked["include"]]
        if digest not in inventories:
            inventories[digest] = ImageInventory.from_frame(corpus.inventory.loc[corpus.inventory["image_digest"] == digest])
        plist = PrefetchList(chosen["path"].tolist(), inventory=inventories[digest])
        incomplete = [str(r) for r, c in zip(svc.run_ids, svc.complete) if not c]
        report = {
            "advisor_version": __version__,
            "synthetic_data": corpus.synthetic,
            "image_ref": _str_or_none(refs.get((service, digest))),
            "history_runs": int(svc.n),
            "complete_runs": int(svc.complete.sum()),
            "incomplete_runs_downweighted": {"weight": cfg.incomplete_weight, "run_ids": incomplete},
            "candidates": int(len(ranked)),
            "expected_bytes": int(chosen["size"].sum()),
            "config": cfg.as_dict(),
            "entries": _entries(chosen),
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


def store_lists(built: list[BuiltList], store: ListStore) -> list[tuple[BuiltList, int]]:
    return [(b, store.put(b.service, b.image_digest, b.plist, b.report)) for b in built]
