"""advisor.synth: synthetic corpora conform to the trace schema and say they are synthetic."""

from __future__ import annotations

from advisor.synth import SYNTHETIC_AGENT_VERSION, SynthSpec, generate, scale_up
from advisor.traces import validate


def test_generate_is_a_valid_marked_corpus():
    runs, acc, inv = generate(SynthSpec.small())
    c = validate(runs, acc, inv)
    assert c.synthetic
    assert (runs["agent_version"] == SYNTHETIC_AGENT_VERSION).all()
    spec = SynthSpec.small()
    # Each service: its complete runs, its incomplete ones, plus the runs on the second image version.
    assert runs.groupby("service")["complete"].sum().min() == spec.runs_per_service
    assert runs["image_digest"].nunique() == spec.images + 1
    # Every traced path exists in its image's inventory.
    m = acc.merge(runs[["run_id", "image_digest"]], on="run_id").merge(inv[["image_digest", "path"]], how="left", indicator=True)
    assert (m["_merge"] == "both").all()


def test_generate_is_deterministic_per_seed():
    a = generate(SynthSpec.small(seed=3))[1]
    b = generate(SynthSpec.small(seed=3))[1]
    assert a.equals(b)


def test_scale_up_reaches_the_target_and_stays_valid():
    runs, acc, inv = generate(SynthSpec.small())
    r2, a2 = scale_up(runs, acc, target_rows=3 * len(acc))
    per_service = len(acc) / runs["service"].nunique()
    assert 3 * len(acc) <= len(a2) <= 3 * len(acc) + 2 * per_service
    c = validate(r2, a2, inv)
    assert c.synthetic
    assert r2["run_id"].is_unique
    assert set(r2["image_digest"]) <= set(inv["image_digest"])
