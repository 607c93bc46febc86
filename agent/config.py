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


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class Readiness:
    """How to tell that a service finished starting. Without one, access quiescence decides."""

    marker: str | None = None  # a file the workload creates, path inside the container
    probe: tuple[str, ...] | None = None  # a host command; exit status 0 means ready


@dataclass(frozen=True)
class TraceConfig:
    enabled: bool = True
    window_s: float = 60.0
    quiescence_s: float = 2.0
    readiness: dict[str, Readiness] = field(default_factory=dict)  # by service key


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
    metrics_port: int = 0  # 0: no metrics endpoint
    trace: TraceConfig = field(default_factory=TraceConfig)
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
    trace = _apply_section(base.trace, data.pop("trace", {}), f"{source}: [trace]")
    inject = _apply_section(base.inject, data.pop("inject", {}), f"{source}: [inject]")
    top = _apply_section(base, data.pop("agent", {}), f"{source}: [agent]")
    if data:
        raise ConfigError(f"{source}: unknown table(s) {sorted(data)}")
    config = replace(top, trace=trace, inject=inject)
    _validate(config, source)
    return config


def _apply_section(section: Any, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table")
    known = {f.name: f for f in fields(section)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known or key in {"trace", "inject"}:
            raise ConfigError(f"{where}: unknown key {key!r}")
        if key == "readiness":
            changes[key] = {**section.readiness, **_readiness(value, where)}
        elif isinstance(getattr(section, key), tuple):
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


def _readiness(value: Any, where: str) -> dict[str, Readiness]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.readiness must be a table keyed by service")
    result = {}
    for service, spec in value.items():
        if not isinstance(spec, dict) or set(spec) - {"marker", "probe"}:
            raise ConfigError(f"{where}.readiness.{service!r} takes only 'marker' and 'probe'")
        marker = spec.get("marker")
        if marker is not None and (not isinstance(marker, str) or not marker.startswith("/")):
            raise ConfigError(f"{where}.readiness.{service!r}.marker must be an absolute path")
        probe = spec.get("probe")
        if probe is not None:
            probe = tuple(_str_list(probe, f"{where}.readiness.{service!r}.probe")) or None
        result[service] = Readiness(marker=marker, probe=probe)
    return result


def _validate(config: AgentConfig, source: str) -> None:
    index = config.plugin_index
    if len(index) != 2 or not index.isdigit():
        raise ConfigError(f"{source}: plugin_index must be exactly two digits, got {index!r}")
    if not 0 < config.handler_budget_s < 2.0:
        raise ConfigError(f"{source}: handler_budget_s must be in (0, 2): containerd drops slower plugins")
    if config.trace.window_s <= 0 or config.trace.quiescence_s <= 0:
        raise ConfigError(f"{source}: trace window_s and quiescence_s must be positive")
    if not config.state_dir.startswith("/"):
        raise ConfigError(f"{source}: state_dir must be absolute")
