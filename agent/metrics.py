"""The agent's Prometheus metrics, defined once so every module counts into the same series."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

NRI_EVENTS = Counter("prefetch_agent_nri_events_total", "NRI events handled", ["event"])
HANDLER_SECONDS = Histogram(
    "prefetch_agent_handler_seconds",
    "Time from an NRI request's dispatch to our answer being ready",
    ["event"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0),
)
HANDLER_OUTCOMES = Counter(
    "prefetch_agent_handler_outcomes_total", "NRI handler answers by outcome (ok, error, overrun, skipped)",
    ["event", "outcome"],
)
RUNS_STARTED = Counter("prefetch_agent_runs_started_total", "Runs whose tracing began", ["late_attach"])


def serve(port: int) -> None:
    """Expose /metrics on localhost only: the numbers name pods, which is not for the network."""
    if port:
        start_http_server(port, addr="127.0.0.1")
        log.info("event=metrics_listening port=%d", port)


def observe_handler(event: str, seconds: float, outcome: str) -> None:
    """The NRI stub's observer: one place records every handler's latency and outcome."""
    HANDLER_SECONDS.labels(event).observe(seconds)
    HANDLER_OUTCOMES.labels(event, outcome).inc()
    if log.isEnabledFor(logging.DEBUG):
        log.debug("event=nri_handled handler=%s us=%d outcome=%s", event, int(seconds * 1e6), outcome)
