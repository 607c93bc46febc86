"""Tracing container starts with fanotify: which image files each start reads, when, and how.

Public API: Tracer (start_run/stop_run/...), RunMeta, Readiness, TraceConfig, RunSummary.
"""

from agent.trace.model import Readiness, RunMeta, TraceConfig
from agent.trace.recorder import RunSummary
from agent.trace.tracer import Tracer

__all__ = ["Readiness", "RunMeta", "RunSummary", "TraceConfig", "Tracer"]
