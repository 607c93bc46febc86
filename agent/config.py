"""Agent configuration: one TOML shape, read from a file and/or passed through NRI's Configure.

Keys set in the NRI config override the file's, table by table, so an operator can keep node
defaults in a file and adjust per runtime.
"""

from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from agent.trace.model import Readiness, TraceConfig


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class InjectConfig:
    enabled: bool = True
    snapshotter_socket: str = "/run/containerd-nydus/system.sock"
    put_timeout_s: float = 0.2
    allowed_list_dirs: tuple[str, ...] = ()  # empty: the agent's own list directory only
    max_inline_bytes: int = 64 * 1024
    advisor_store: str | None = None  # the advisor's ListStore root; default <state_dir>/advisor


@dataclass(frozen=True)
class AgentConfig:
    state_dir: str = "/var/lib/prefetch-advisor"
    node: str = field(default_factory=socket.gethostname)
    nri_socket: str = "/var/run/nri/nri.sock"
    cri_socket: str = "/run/containerd/containerd.sock"
    plugin_name: str = "prefetch-advisor"
    plugin_index: str = "50"
    handler_budget_s: float = 0.5
    realtime_handlers: bool = True  # NRI connection and handler threads SCHED_FIFO (see the stub)
    metrics_port: int = 0  # 0: no metrics endpoint
    trace_enabled: bool = True
    trace: TraceConfig = field(default_factory=TraceConfig)
    readiness: dict[str, Readiness] = field(default_factory=dict)  # by service key
    inject: InjectConfig = field(default_factory=InjectConfig)

    @property
    def list_dir(self) -> Path:
        return Path(self.state_dir) / "lists"

    @property
    def advisor_store_dir(self) -> Path:
        return Path(self.inject.advisor_store or Path(self.state_dir) / "advisor")

    @property
    def allowed_list_dirs(self) -> tuple[Path, ...]:
        return tuple(Path(d) for d in self.inject.allowed_list_dirs) or (self.list_dir,)


def load_file(path: str | Path) -> AgentConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return merge_toml(AgentConfig(), text, source=str(path))


def merge_toml(base: AgentConfig, text: str, source: str = "NRI config") -> AgentConfig:
    """Overlay the keys present in `text` on `base`; unknown keys are an error, not ignored."""
    if not text.strip():
        return base
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return _apply(base, data, source)


def _apply(base: AgentConfig, data: dict[str, Any], source: str) -> AgentConfig:
    data = dict(data)
    trace_table = data.pop("trace", {})
    if not isinstance(trace_table, dict):
        raise ConfigError(f"{source}: [trace] must be a table")
    trace_table = dict(trace_table)
    enabled = trace_table.pop("enabled", base.trace_enabled)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{source}: [trace].enabled must be true or false")
    # The tracer validates its own knobs; we only overlay the keys this source sets.
    try:
        trace = TraceConfig.from_mapping({**_fields_of(base.trace), **trace_table})
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    readiness = {**base.readiness, **_readiness(data.pop("readiness", {}), source)}
    inject = _apply_section(base.inject, data.pop("inject", {}), f"{source}: [inject]")
    top = _apply_section(base, data.pop("agent", {}), f"{source}: [agent]")
    if data:
        raise ConfigError(f"{source}: unknown table(s) {sorted(data)}")
    config = replace(top, trace_enabled=enabled, trace=trace, readiness=readiness, inject=inject)
    _validate(config, source)
    return config


def _fields_of(section: Any) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in fields(section)}


def _apply_section(section: Any, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table")
    known = {f.name for f in fields(section)} - {"trace", "inject", "readiness", "trace_enabled"}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}")
        if isinstance(getattr(section, key), tuple):
            changes[key] = tuple(_str_list(value, f"{where}.{key}"))
        else:
            changes[key] = _typed(getattr(section, key), value, f"{where}.{key}")
    return replace(section, **changes)


def _typed(current: Any, value: Any, where: str) -> Any:
    if current is None or isinstance(current, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if isinstance(current, int) and not isinstance(value, bool) and isinstance(value, int):
        return value
    if isinstance(current, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return float(value)
    raise ConfigError(f"{where} has the wrong type")


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return value


def _readiness(value: Any, source: str) -> dict[str, Readiness]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [readiness] must be a table keyed by service")
    result = {}
    for service, spec in value.items():
        try:
            readiness = Readiness.from_mapping(spec if isinstance(spec, dict) else {"?": spec})
        except ValueError as exc:
            raise ConfigError(f"{source}: [readiness.{service!r}]: {exc}") from None
        if readiness is not None:
            result[service] = readiness
    return result


def _validate(config: AgentConfig, source: str) -> None:
    index = config.plugin_index
    if len(index) != 2 or not index.isdigit():
        raise ConfigError(f"{source}: plugin_index must be exactly two digits, got {index!r}")
    if not 0 < config.handler_budget_s < 2.0:
        raise ConfigError(f"{source}: handler_budget_s must be in (0, 2): containerd drops slower plugins")
    if not config.state_dir.startswith("/"):
        raise ConfigError(f"{source}: state_dir must be absolute")
