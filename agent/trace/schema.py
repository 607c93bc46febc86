"""The trace schema: the one contract between the tracer that writes runs and the advisor that reads them.

Documented for users in docs/trace-schema.md; bump SCHEMA_VERSION on any incompatible change.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

# Why bool flag columns rather than one list column: pandas filters on them directly, and Parquet
# stores them in a bit each.
RUN_FLAGS = ("overflow", "late_attach", "early_exit", "agent_restart", "runtime_restart")

READY_SOURCES = ("marker", "probe", "quiescence", "none")
END_REASONS = ("stop", "exit", "window", "runtime_restart", "agent_restart", "agent_shutdown")

RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("service", pa.string()),
        ("namespace", pa.string()),
        ("pod", pa.string()),
        ("pod_uid", pa.string()),
        ("container", pa.string()),
        ("container_id", pa.string()),
        ("image_ref", pa.string()),
        ("image_ref_normalized", pa.string()),
        ("image_digest", pa.string()),  # null until the CRI lookup answered
        ("node", pa.string()),
        ("started_at", pa.timestamp("ns", tz="UTC")),
        ("ended_at", pa.timestamp("ns", tz="UTC")),
        ("end_reason", pa.string()),
        ("exit_code", pa.int32()),  # null when unknown
        ("ready_ns", pa.int64()),  # null when the run never became ready
        ("ready_source", pa.string()),
        ("window_ns", pa.int64()),
        ("complete", pa.bool_()),
        *[(f"flag_{f}", pa.bool_()) for f in RUN_FLAGS],
        ("events", pa.int64()),
        ("agent_version", pa.string()),
        ("schema_version", pa.int16()),
    ]
)

# One row per file per run. `kinds` is a sorted comma-joined subset of {"exec","open","read"}.
ACCESSES = pa.schema(
    [
        ("run_id", pa.string()),
        ("path", pa.string()),
        ("seq", pa.int32()),  # order of first access within the run; breaks first_ns ties
        ("first_ns", pa.int64()),  # since container start
        ("kinds", pa.string()),
        ("opens", pa.int32()),
        ("size", pa.int64()),
        ("from_image", pa.bool_()),
    ]
)

# One row per file per image digest, whiteouts applied. type: f d l c b p s.
INVENTORY = pa.schema(
    [
        ("image_digest", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("type", pa.string()),
        ("link_target", pa.string()),
        ("mode", pa.int32()),
    ]
)

ACCESS_KINDS = ("exec", "open", "read")
