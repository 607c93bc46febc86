"""The corpus services: what each runs, on which image, how it signals readiness, and what varies.

Every run draws its knobs from a seeded RNG, so a corpus is reproducible from (seed, service, run
index). The knob tables below are also what data/README.md documents, so the doc cannot drift.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from corpus.images import RECIPES

READY_MARKER = "/tmp/ready"
NAMESPACE = "corpus"
CONTAINER = "main"


@dataclass(frozen=True)
class Knob:
    """One environment variable; its value is drawn from weighted choices."""

    env: str
    choices: tuple[tuple[str, float], ...]
    doc: str

    def draw(self, rng: random.Random) -> str:
        values, weights = zip(*self.choices)
        return rng.choices(values, weights=weights)[0]

    def describe(self) -> str:
        total = sum(w for _, w in self.choices)
        return ", ".join(f"`{v or '(empty)'}` {w / total:.0%}" for v, w in self.choices)


@dataclass(frozen=True)
class SubsetKnob:
    """A space/comma-joined subset: each option is included independently with its probability."""

    env: str
    options: tuple[tuple[str, float], ...]
    doc: str
    sep: str = " "

    def draw(self, rng: random.Random) -> str:
        return self.sep.join(o for o, p in self.options if rng.random() < p)

    def describe(self) -> str:
        return ", ".join(f"`{o}` {p:.0%}" for o, p in self.options) + " (each independently)"


@dataclass(frozen=True)
class RangeKnob:
    """An integer drawn log-uniformly from [lo, hi] (data sizes vary over orders of magnitude)."""

    env: str
    lo: int
    hi: int
    doc: str

    def draw(self, rng: random.Random) -> str:
        import math

        return str(int(round(math.exp(rng.uniform(math.log(self.lo), math.log(self.hi))))))

    def describe(self) -> str:
        return f"log-uniform {self.lo}..{self.hi}"


AnyKnob = Knob | SubsetKnob | RangeKnob


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # the workload: pod label app.kubernetes.io/name
    family: str  # image family (see corpus.images.RECIPES)
    command: tuple[str, ...]
    summary: str
    knobs: tuple[AnyKnob, ...]
    port: int | None = None
    batch: bool = False  # exits by itself after ready (a job), else serves until stopped
    images: tuple[str, ...] = ()  # recipe names; first is the main one

    @property
    def service_key(self) -> str:
        return f"{NAMESPACE}/{self.name}/{CONTAINER}"


@dataclass(frozen=True)
class RunPlan:
    """Everything that determines one run."""

    service: str
    index: int
    image: str  # recipe name
    env: dict[str, str] = field(default_factory=dict)
    intent: str = "complete"  # complete | early_exit | agent_restart | overflow

    @property
    def pod_name(self) -> str:
        return f"{self.service}-{self.index:03d}"


SERVICES: dict[str, ServiceSpec] = {
    s.name: s
    for s in (
        ServiceSpec(
            name="py-api",
            family="python",
            images=("python-v1", "python-v2"),
            command=("python3", "/opt/app/api.py"),
            port=18081,
            summary="stdlib HTTP JSON API; ready when its own /healthz, / and /items answer",
            knobs=(
                Knob("CONFIG_FORMAT", (("json", 0.6), ("yaml", 0.4)), "config file parsed with json or PyYAML"),
                Knob("TEMPLATES", (("0", 0.6), ("1", 0.4)), "jinja2 HTML pages"),
                Knob("GZIP", (("0", 0.7), ("1", 0.3)), "gzip response bodies"),
                Knob("DB", (("none", 0.4), ("memory", 0.3), ("sqlite", 0.3)), "sqlite3 catalogue"),
                Knob("LOG", (("stdout", 0.7), ("file", 0.3)), "log to a file in /tmp"),
                Knob("AUTH", (("0", 0.75), ("1", 0.25)), "hmac/hashlib/secrets response signing"),
            ),
        ),
        ServiceSpec(
            name="py-etl",
            family="python",
            images=("python-v1", "python-v2"),
            command=("python3", "/opt/app/etl.py"),
            batch=True,
            summary="pandas batch job: generate, load and aggregate sales data; ready when transformed",
            knobs=(
                RangeKnob("ROWS", 500, 50000, "input rows"),
                Knob("COMPRESSION", (("none", 0.4), ("gzip", 0.3), ("bz2", 0.15), ("xz", 0.15)), "input codec"),
                Knob("PARSE_DATES", (("0", 0.5), ("1", 0.5)), "read_csv date parsing"),
                Knob("TZ_CONVERT", (("0", 0.7), ("1", 0.3)), "time-zone conversion (zoneinfo data)"),
                Knob("PIVOT", (("0", 0.6), ("1", 0.4)), "pivot table"),
                Knob("OUTPUT", (("csv", 0.4), ("json", 0.25), ("sqlite", 0.2), ("html", 0.15)), "result writer"),
            ),
        ),
        ServiceSpec(
            name="py-numeric",
            family="python",
            images=("python-v1", "python-v2"),
            command=("python3", "/opt/app/numeric.py"),
            batch=True,
            summary="numpy job: build matrices, first kernels, then more work; ready after warm-up",
            knobs=(
                RangeKnob("SIZE", 64, 512, "matrix size"),
                Knob("DTYPE", (("float64", 0.7), ("float32", 0.3)), "dtype"),
                SubsetKnob("OPS", (("linalg", 0.8), ("fft", 0.5), ("poly", 0.3), ("stats", 0.5),
                                   ("random", 0.4)), "numpy submodules exercised", sep=","),
                Knob("SAVE", (("none", 0.5), ("npy", 0.2), ("npz", 0.2), ("txt", 0.1)), "result format"),
                Knob("OPENBLAS_NUM_THREADS", (("1", 0.5), ("2", 0.5)), "BLAS threads"),
                RangeKnob("BATCHES", 3, 20, "scoring batches after ready (the job's main work)"),
            ),
        ),
        ServiceSpec(
            name="py-report",
            family="python",
            images=("python-v1",),
            command=("python3", "/opt/app/report.py"),
            batch=True,
            summary="jinja2 report renderer from a YAML/JSON spec; ready when templates compiled",
            knobs=(
                Knob("FORMAT", (("md", 0.6), ("html", 0.4)), "output template"),
                Knob("SPEC", (("yaml", 0.7), ("json", 0.3)), "spec format"),
                Knob("TABLE", (("0", 0.6), ("1", 0.4)), "pandas summary table"),
                RangeKnob("SECTIONS", 2, 16, "sections rendered"),
                RangeKnob("RECIPIENTS", 500, 1500, "personalised copies after ready (the job's main work)"),
                Knob("DELIVERY", (("dir", 0.5), ("tar", 0.3), ("zip", 0.2)), "how the copies are packed"),
            ),
        ),
        ServiceSpec(
            name="web-static",
            family="web",
            images=("web-v1",),
            command=("sh", "/opt/app/static.sh"),
            port=18080,
            summary="nginx static site, config built from knobs; ready when a probe fetched the pages",
            knobs=(
                Knob("WORKERS", (("1", 0.5), ("2", 0.5)), "worker_processes"),
                Knob("GZIP", (("off", 0.5), ("on", 0.5)), "gzip"),
                SubsetKnob("MODULES", (("image_filter", 0.3), ("xslt", 0.25), ("stream", 0.2)),
                           "dynamic modules loaded (and exercised by the probe)"),
                Knob("ACCESS_LOG", (("off", 0.6), ("on", 0.4)), "access log"),
                Knob("SENDFILE", (("on", 0.7), ("off", 0.3)), "sendfile"),
            ),
        ),
        ServiceSpec(
            name="web-api",
            family="web",
            images=("web-v1",),
            command=("perl", "/opt/app/api.pl"),
            port=18082,
            summary="perl HTTP::Daemon JSON API with optional plugins; ready when its probe passed",
            knobs=(
                SubsetKnob("PLUGINS", (("Digest::SHA", 0.5), ("Storable", 0.3), ("Time::Piece", 0.4),
                                       ("Data::Dumper", 0.3), ("Encode", 0.3), ("MIME::Base64", 0.3),
                                       ("POSIX", 0.4)), "perl modules required at start"),
                Knob("JSON_CANONICAL", (("0", 0.7), ("1", 0.3)), "canonical JSON"),
                RangeKnob("ITEMS", 10, 5000, "catalogue size"),
            ),
        ),
        ServiceSpec(
            name="data-redis",
            family="data",
            images=("data-v1",),
            command=("sh", "/opt/app/redis.sh"),
            port=16379,
            summary="redis-server from a generated config, optional preload and Lua; ready on PONG + load",
            knobs=(
                Knob("APPENDONLY", (("no", 0.6), ("yes", 0.4)), "AOF persistence"),
                Knob("SAVE", (("", 0.5), ("60 1000", 0.5)), "RDB snapshots"),
                Knob("MAXMEMORY_POLICY", (("noeviction", 0.5), ("allkeys-lru", 0.3), ("volatile-ttl", 0.2)),
                     "eviction policy"),
                Knob("PRELOAD", (("0", 0.4), ("1000", 0.3), ("20000", 0.3)), "keys loaded with redis-cli --pipe"),
                Knob("LUA", (("0", 0.7), ("1", 0.3)), "EVAL a Lua script"),
                Knob("IO_THREADS", (("1", 0.7), ("2", 0.3)), "io-threads"),
            ),
        ),
        ServiceSpec(
            name="data-postgres",
            family="data",
            images=("data-v1",),
            command=("sh", "/opt/app/postgres.sh"),
            port=15432,
            summary="PostgreSQL 15: first boot (initdb) or the baked cluster, then schema + rows",
            knobs=(
                Knob("MODE", (("fresh", 0.6), ("baked", 0.4)), "initdb a new cluster or start the image's"),
                Knob("CHECKSUMS", (("0", 0.7), ("1", 0.3)), "initdb --data-checksums (fresh only)"),
                Knob("SHARED_BUFFERS", (("16MB", 0.3), ("32MB", 0.4), ("64MB", 0.3)), "shared_buffers"),
                RangeKnob("ROWS", 100, 20000, "rows inserted"),
                SubsetKnob("EXTENSIONS", (("hstore", 0.3), ("pgcrypto", 0.3), ("pg_trgm", 0.2)),
                           "extensions created"),
            ),
        ),
    )
}

for _s in SERVICES.values():
    assert _s.family == RECIPES[_s.images[0]].family, _s.name
_ports = [s.port for s in SERVICES.values() if s.port is not None]
assert len(_ports) == len(set(_ports)), "services using ports must use distinct ports"


def plan_runs(
    service: ServiceSpec,
    complete_runs: int,
    seed: int,
    *,
    early_exits: int = 1,
    upgrade_runs: int = 0,
    agent_restarts: int = 0,
    overflows: int = 0,
) -> list[RunPlan]:
    """The run plans of one service, reproducible from the seed.

    complete_runs on the main image; then, if the service has a second image version, upgrade_runs
    on it (a rollout to the new version); early_exits crash before ready (CRASH=1); agent_restarts
    have the agent killed and restarted while the run is in flight; overflows run under an agent
    starved of file descriptors, so fanotify drops events. Incomplete runs are spread through the
    sequence at seeded positions.
    """
    rng = random.Random(f"{seed}/{service.name}")
    intents = (["complete"] * complete_runs + ["early_exit"] * early_exits
               + ["agent_restart"] * agent_restarts + ["overflow"] * overflows)
    head = intents[:1]  # the first run is always a normal one
    rest = intents[1:]
    rng.shuffle(rest)
    intents = head + rest
    images = [service.images[0]] * len(intents)
    if upgrade_runs and len(service.images) > 1:
        intents += ["complete"] * upgrade_runs
        images += [service.images[1]] * upgrade_runs
    plans = []
    for i, (intent, image) in enumerate(zip(intents, images)):
        env = {k.env: k.draw(rng) for k in service.knobs}
        env["SEED"] = str(rng.randrange(1 << 30))
        if service.port is not None:
            env["PORT"] = str(service.port)
        env["READY_FILE"] = READY_MARKER
        if intent == "early_exit":
            env["CRASH"] = "1"
        plans.append(RunPlan(service.name, i, image, env, intent))
    return plans
