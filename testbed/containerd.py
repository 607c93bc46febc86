"""An isolated containerd 1.7 with NRI, runc and local images, driven through real crictl.

    with Testbed() as tb:
        pod = tb.run_pod({"metadata": {"name": "p"}})
        ctr = tb.create_container(pod, {"metadata": {"name": "c"},
                                        "image": {"image": BUSYBOX_IMAGE},
                                        "command": ["/bin/sh", "-c", "echo hi"]})
        tb.start(ctr)
        assert tb.wait_exit(ctr) == 0

Each instance lives in its own fresh directory (own root, state, sockets, runc root, cgroup
parent), so several instances and a system containerd never collide. `down()` removes everything
the instance made: pods, containerd, leftover shims and container processes, mounts, cgroup
directories and the directory itself.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from testbed import images as base_images
from testbed.oci import BuiltImage, ImageConfig, build_image_archive, import_image
from testbed.paths import (DEFAULT_BASE_DIR, MissingPrerequisite, check_prerequisites,
                           containerd_bin_dir, crictl_path, runc_path)
from testbed.toml_render import deep_merge, render_toml

log = logging.getLogger(__name__)

K8S_NAMESPACE = "k8s.io"
NAMESPACE_MODE_NODE = 2  # runtime.v1.NamespaceMode.NODE: host network, no CNI needed
CGROUP_ROOT = Path("/sys/fs/cgroup")
# containerd 1.7 puts shim sockets in /run/containerd/s/<sha256(address/ns/id)>, whatever its
# configured state dir; teardown removes the ones of this instance that a killed shim left.
SHIM_SOCKET_DIR = Path("/run/containerd/s")
_SUN_PATH_MAX = 107
_META_FILE = "testbed.json"

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


class TestbedError(RuntimeError):
    """A testbed operation failed; the message carries the tool's own error text."""


def _umount(path: str, flags: int = 0) -> int:
    """umount2(2); returns 0 or the errno."""
    if _libc.umount2(path.encode(), flags) == 0:
        return 0
    return ctypes.get_errno()


def _mount_points_under(prefix: Path) -> list[str]:
    """Mount points at or below prefix, deepest first (from this mount namespace's mountinfo)."""
    pre = str(prefix).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            if mp == pre or mp.startswith(pre + "/"):
                found.append(mp)
    return sorted(set(found), key=lambda p: (p.count("/"), p), reverse=True)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _start_time(pid: int) -> int | None:
    """Process start time in clock ticks since boot (tells a pid from a reused one)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until the pids are gone (reaping our own children); return those still alive."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive:
        for pid in alive:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        alive = [p for p in alive if _pid_alive(p)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return alive


def _load_config_doc(cfg: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """A CRI config given as a dict, a path to a YAML/JSON file, or YAML/JSON text."""
    if isinstance(cfg, Mapping):
        return json.loads(json.dumps(cfg))  # deep copy, and proves it is JSON-serialisable
    import yaml  # dev dependency; only needed for YAML input

    text: str
    if isinstance(cfg, os.PathLike) or (isinstance(cfg, str) and "\n" not in cfg
                                         and Path(cfg).is_file()):
        text = Path(cfg).read_text()
    else:
        text = str(cfg)
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ValueError("CRI config must be a mapping (YAML/JSON object)")
    return doc


def reap_stale_instances(base_dir: Path | str | None = None) -> list[Path]:
    """Tear down instances under base_dir whose owning process died without calling down().

    Instances of live processes and detached ones (`python -m testbed up`) are left alone, so
    this is safe while other test sessions run. Returns the dirs that were reaped.
    """
    base = Path(base_dir) if base_dir is not None else DEFAULT_BASE_DIR
    reaped: list[Path] = []
    try:
        candidates = sorted(p for p in base.iterdir() if (p / _META_FILE).is_file())
    except OSError:
        return reaped
    for d in candidates:
        try:
            tb = Testbed.attach(d)
            if tb.owner_alive():
                continue
            log.warning("reaping stale testbed dir=%s owner_pid=%s", d, tb._owner[0])
            tb.down()
            reaped.append(d)
        except Exception as exc:  # one broken leftover must not stop the others
            log.error("stale testbed not reaped dir=%s err=%s", d, exc)
    return reaped


class Testbed:
    """One isolated containerd (CRI + NRI) instance. See the module docstring."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, base_dir: Path | str | None = None, *,
                 config_patch: Mapping[str, Any] | None = None,
                 images: Sequence[BuiltImage] | None = None,
                 log_level: str = "info",
                 ready_timeout: float = 30.0) -> None:
        """Prepare an instance (nothing runs until `up()` or `with`).

        base_dir: parent of the instance dir (default /run/prefetch-testbed, env
        TESTBED_BASE_DIR); the instance gets a fresh unique subdirectory.
        config_patch: deep-merged into the containerd config dict (see `containerd_config`).
        images: archives to import at start; default the pause and busybox base images.
        """
        self._base_dir = Path(base_dir) if base_dir is not None else DEFAULT_BASE_DIR
        self._config_patch = dict(config_patch or {})
        self._images = images
        self._log_level = log_level
        self._ready_timeout = ready_timeout
        self._dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._pid: int | None = None
        self._log_file = None
        self._pod_configs: dict[str, dict[str, Any]] = {}
        self._seen_ids: set[str] = set()
        self._k8s_cgroup_preexisting: dict[str, bool] = {}
        # Who owns the instance (pid, start time); None for detached ones (`python -m testbed
        # up`). reap_stale_instances() tears down instances whose owner died without down().
        self._owner: tuple[int | None, int | None] = (os.getpid(), _start_time(os.getpid()))
        self.imported: list[BuiltImage] = []

    # ------------------------------------------------------------------ paths
    @property
    def dir(self) -> Path:
        if self._dir is None:
            raise TestbedError("testbed is not up")
        return self._dir

    @property
    def cri_socket(self) -> Path:
        """containerd's gRPC socket (CRI runtime + image services, and ctr)."""
        return self.dir / "containerd.sock"

    @property
    def nri_socket(self) -> Path:
        """Where external NRI plugins connect."""
        return self.dir / "nri.sock"

    @property
    def cri_endpoint(self) -> str:
        return f"unix://{self.cri_socket}"

    @property
    def runc_root(self) -> Path:
        """runc's state root as the runc shim uses it (Root/<namespace>)."""
        return self.dir / "runc" / K8S_NAMESPACE

    @property
    def log_path(self) -> Path:
        return self.dir / "containerd.log"

    @property
    def config_path(self) -> Path:
        return self.dir / "config.toml"

    @property
    def crictl_config(self) -> Path:
        return self.dir / "crictl.yaml"

    @property
    def cgroup_parent(self) -> str:
        """Cgroup parent of every pod made by run_pod (unique per instance)."""
        return f"/prefetch-testbed-{self.dir.name}"

    @property
    def containerd_pid(self) -> int | None:
        """Pid of this instance's running containerd, else None.

        Checked against the command line too: after a crash the recorded pid may belong to an
        unrelated process by now, and that one must never be signalled.
        """
        if not self._pid or not _pid_alive(self._pid):
            return None
        argv = _cmdline(self._pid)
        if self._dir is None or str(self.config_path) not in argv:
            return None
        return self._pid

    @property
    def ctr_bin(self) -> Path:
        return containerd_bin_dir() / "ctr"

    def crictl_command(self) -> list[str]:
        """The crictl command line (without subcommand) that talks to this instance."""
        return [str(crictl_path()), "--config", str(self.crictl_config),
                "--runtime-endpoint", self.cri_endpoint, "--image-endpoint", self.cri_endpoint]

    # ------------------------------------------------------------------ config
    def containerd_config(self) -> dict[str, Any]:
        d = self.dir
        cri = "io.containerd.grpc.v1.cri"
        base: dict[str, Any] = {
            "version": 2,
            "root": str(d / "root"),
            "state": str(d / "state"),
            "grpc": {"address": str(self.cri_socket)},
            "ttrpc": {"address": str(self.cri_socket) + ".ttrpc"},
            "debug": {"level": self._log_level},
            "plugins": {
                "io.containerd.nri.v1.nri": {
                    "disable": False,  # NRI is off by default in 1.7
                    "socket_path": str(self.nri_socket),
                    "plugin_path": str(d / "nri-plugins"),
                    "plugin_config_path": str(d / "nri-conf.d"),
                },
                "io.containerd.internal.v1.opt": {"path": str(d / "opt")},
                cri: {
                    "sandbox_image": base_images.PAUSE_IMAGE,
                    # Root here lacks CAP_SYS_RESOURCE: without this RunPodSandbox fails with
                    # "can't get final child's PID from pipe: EOF".
                    "restrict_oom_score_adj": True,
                    "stream_server_address": "127.0.0.1",
                    "stream_server_port": "0",
                    "cni": {"bin_dir": str(d / "cni" / "bin"),
                            "conf_dir": str(d / "cni" / "net.d")},
                    "containerd": {"runtimes": {"runc": {
                        "runtime_type": "io.containerd.runc.v2",
                        "options": {"Root": str(d / "runc")},
                    }}},
                },
            },
        }
        return deep_merge(base, self._config_patch)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Testbed":
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> "Testbed":
        """Create the instance dir, start containerd, wait for the CRI, import images."""
        if self._dir is not None:
            raise TestbedError(f"testbed already up at {self._dir}")
        check_prerequisites()
        self._base_dir.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="tb-", dir=self._base_dir))
        try:
            self._save_meta()  # at once: a crash from here on still leaves a reapable instance
            longest = str(self.cri_socket) + ".ttrpc"
            if len(longest) > _SUN_PATH_MAX:
                raise TestbedError(f"socket path {longest} exceeds {_SUN_PATH_MAX} bytes; "
                                   "use a shorter base_dir")
            for sub in ("root", "state", "runc", "opt", "nri-plugins", "nri-conf.d", "cni/bin",
                        "cni/net.d", "pod-logs", "specs"):
                (self._dir / sub).mkdir(parents=True, exist_ok=True)
            for ctl in self._cgroup_controller_dirs():
                self._k8s_cgroup_preexisting[str(ctl)] = (ctl / K8S_NAMESPACE).exists()
            self.config_path.write_text(render_toml(self.containerd_config()))
            self.crictl_config.write_text(
                f"runtime-endpoint: {self.cri_endpoint}\nimage-endpoint: {self.cri_endpoint}\n"
                "timeout: 30\n")
            self._save_meta()
            self.start_containerd()
            images = self._images if self._images is not None else base_images.build_base_images()
            for img in images:
                self.import_image(img)
        except BaseException:
            log.error("testbed up failed dir=%s; tearing down", self._dir)
            self.down()
            raise
        log.info("testbed up dir=%s cri=%s nri=%s pid=%s", self._dir, self.cri_socket,
                 self.nri_socket, self._pid)
        return self

    def _save_meta(self) -> None:
        meta = {"dir": str(self.dir), "cri_socket": str(self.cri_socket),
                "owner_pid": self._owner[0], "owner_start": self._owner[1],
                "nri_socket": str(self.nri_socket), "containerd_pid": self._pid,
                "cgroup_parent": self.cgroup_parent,
                "k8s_cgroup_preexisting": self._k8s_cgroup_preexisting,
                "crictl": self.crictl_command()}
        tmp = self.dir / (_META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, self.dir / _META_FILE)

    @classmethod
    def attach(cls, instance_dir: Path | str) -> "Testbed":
        """A handle on an instance started elsewhere (e.g. by `python -m testbed up`)."""
        d = Path(instance_dir)
        try:
            meta = json.loads((d / _META_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise TestbedError(f"{d} is not a testbed instance dir: {exc}") from exc
        tb = cls(base_dir=d.parent)
        tb._dir = d
        tb._pid = meta.get("containerd_pid")
        tb._k8s_cgroup_preexisting = dict(meta.get("k8s_cgroup_preexisting", {}))
        tb._owner = (meta.get("owner_pid"), meta.get("owner_start"))
        return tb

    def detach(self) -> None:
        """Mark the instance as owned by nobody: it outlives this process on purpose."""
        self._owner = (None, None)
        self._save_meta()

    def owner_alive(self) -> bool:
        pid, start = self._owner
        if pid is None:
            return True  # detached: never reaped automatically
        return _pid_alive(pid) and _start_time(pid) == start

    def start_containerd(self) -> None:
        """Start containerd on this instance's dirs (also after kill_containerd)."""
        if self.containerd_pid is not None:
            raise TestbedError(f"containerd already running pid={self._pid}")
        bin_dir = containerd_bin_dir()
        env = dict(os.environ)
        # The runc shim is looked up next to containerd or on PATH; runc itself on PATH.
        env["PATH"] = ":".join([str(bin_dir), env.get("PATH", ""), "/usr/local/sbin",
                                "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        if self._log_file is not None:
            self._log_file.close()
        self._log_file = open(self.log_path, "ab")
        t0 = time.monotonic()
        # Own session: a Ctrl-C in the terminal must not hit containerd, and `python -m testbed
        # up` can exit while containerd keeps running.
        self._proc = subprocess.Popen(
            [str(bin_dir / "containerd"), "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=env, start_new_session=True)
        self._pid = self._proc.pid
        self._save_meta()
        self._wait_cri_ready(t0)
        log.info("containerd started pid=%s ready_s=%.3f", self._pid, time.monotonic() - t0)

    def _wait_cri_ready(self, t0: float) -> None:
        deadline = t0 + self._ready_timeout
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise TestbedError(f"containerd exited rc={self._proc.returncode} during start; "
                                   f"log tail:\n{self.log_tail()}")
            if self.cri_socket.exists():
                r = self.crictl("version", check=False, timeout=5)
                if r.returncode == 0:
                    return
                last = r.stderr.strip()
            time.sleep(0.05)
        raise TestbedError(f"CRI not ready after {self._ready_timeout}s: {last}\n"
                           f"log tail:\n{self.log_tail()}")

    def _wait_containerd_exit(self, pid: int, timeout: float) -> bool:
        """True once containerd pid has exited (reaped through Popen when it is our child)."""
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return not _wait_gone([pid], timeout)

    def kill_containerd(self) -> None:
        """SIGKILL containerd. Shims and containers keep running, as after a real crash."""
        pid = self.containerd_pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        if not self._wait_containerd_exit(pid, 10):
            raise TestbedError(f"containerd pid={pid} survived SIGKILL")
        self._proc = None
        log.info("containerd killed pid=%s", pid)

    def stop_containerd(self, timeout: float = 10.0) -> None:
        """SIGTERM containerd (SIGKILL after timeout). Shims keep running."""
        pid = self.containerd_pid
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        if not self._wait_containerd_exit(pid, timeout):
            log.warning("containerd ignored SIGTERM, killing pid=%s", pid)
            self.kill_containerd()
        self._proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no containerd log)"

    # ------------------------------------------------------------------ tools
    def crictl(self, *args: str, check: bool = True, timeout: float = 60.0,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run real crictl against this instance; raises TestbedError on failure if check."""
        cmd = [*self.crictl_command(), *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  input=input)
        except subprocess.TimeoutExpired as exc:
            raise TestbedError(f"crictl {' '.join(args)} timed out after {timeout}s") from exc
        if check and proc.returncode != 0:
            raise TestbedError(f"crictl {' '.join(args)} failed rc={proc.returncode}: "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        if proc.returncode == 0 and args and args[0] in ("runp", "create", "run"):
            # Remember ids made by hand-written crictl calls too, for cgroup cleanup in down().
            self._seen_ids.update(proc.stdout.split())
        return proc

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0,
            namespace: str = K8S_NAMESPACE) -> subprocess.CompletedProcess[str]:
        """Run containerd's ctr against this instance."""
        cmd = [str(self.ctr_bin), "--address", str(self.cri_socket), "-n", namespace, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise TestbedError(f"ctr {' '.join(args)} failed rc={proc.returncode}: "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def import_image(self, image: BuiltImage | Path | str) -> None:
        """Import an OCI image-layout archive (see testbed.oci.build_image_archive)."""
        archive = image.archive if isinstance(image, BuiltImage) else Path(image)
        t0 = time.monotonic()
        import_image(self.ctr_bin, self.cri_socket, archive, namespace=K8S_NAMESPACE)
        if isinstance(image, BuiltImage):
            self.imported.append(image)
        log.info("image imported archive=%s s=%.3f", archive, time.monotonic() - t0)

    def build_and_import(self, name: str, layers: Sequence[Path] | Path,
                         config: ImageConfig = ImageConfig()) -> BuiltImage:
        """Build an image from rootfs dir(s) into this instance's dir and import it."""
        archive = self.dir / "images" / f"{uuid.uuid4().hex[:12]}.tar"
        built = build_image_archive(name, layers, archive, config)
        try:
            self.import_image(built)
        finally:
            archive.unlink(missing_ok=True)
        return built

    # ------------------------------------------------------------------ pods
    def _spec_file(self, kind: str, doc: Mapping[str, Any]) -> Path:
        path = self.dir / "specs" / f"{kind}-{uuid.uuid4().hex[:12]}.json"
        path.write_text(json.dumps(doc))
        return path

    def pod_config(self, pod: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
        """The pod config run_pod would use: host network, log dir, instance cgroup parent."""
        cfg = _load_config_doc(pod)
        md = cfg.setdefault("metadata", {})
        if not md.get("name"):
            raise ValueError("pod config needs metadata.name")
        md.setdefault("namespace", "default")
        md.setdefault("uid", uuid.uuid4().hex)
        md.setdefault("attempt", 0)
        linux = cfg.setdefault("linux", {})
        ns_opts = linux.setdefault("security_context", {}).setdefault("namespace_options", {})
        if ns_opts.get("network", NAMESPACE_MODE_NODE) != NAMESPACE_MODE_NODE:
            log.warning("pod network namespace forced to NODE (no CNI) pod=%s", md["name"])
        ns_opts["network"] = NAMESPACE_MODE_NODE
        linux.setdefault("cgroup_parent", self.cgroup_parent)
        cfg.setdefault("log_directory",
                       str(self.dir / "pod-logs" / f"{md['namespace']}_{md['name']}_{md['uid']}"))
        return cfg

    def run_pod(self, pod: Mapping[str, Any] | str | os.PathLike) -> str:
        """RunPodSandbox via `crictl runp`; returns the pod id."""
        cfg = self.pod_config(pod)
        Path(cfg["log_directory"]).mkdir(parents=True, exist_ok=True)
        pod_id = self.crictl("runp", str(self._spec_file("pod", cfg))).stdout.strip()
        self._pod_configs[pod_id] = cfg
        self._seen_ids.add(pod_id)
        return pod_id

    def create_container(self, pod_id: str, container: Mapping[str, Any] | str | os.PathLike,
                         pod: Mapping[str, Any] | str | os.PathLike | None = None) -> str:
        """CreateContainer via `crictl create`; returns the container id.

        `pod` defaults to the config run_pod used for pod_id. `image` may be a plain string.
        Logs go to <pod log dir>/<name>_<attempt>.log unless log_path is set.
        """
        cfg = _load_config_doc(container)
        if pod is not None:
            pod_cfg = self.pod_config(pod)
        elif pod_id in self._pod_configs:
            pod_cfg = self._pod_configs[pod_id]
        else:
            raise ValueError(f"no pod config known for pod {pod_id}; pass it")
        md = cfg.setdefault("metadata", {})
        if not md.get("name"):
            raise ValueError("container config needs metadata.name")
        md.setdefault("attempt", 0)
        if isinstance(cfg.get("image"), str):
            cfg["image"] = {"image": cfg["image"]}
        cfg.setdefault("log_path", f"{md['name']}_{md['attempt']}.log")
        ctr_id = self.crictl("create", pod_id, str(self._spec_file("ctr", cfg)),
                             str(self._spec_file("pod", pod_cfg))).stdout.strip()
        self._seen_ids.add(ctr_id)
        return ctr_id

    def start(self, ctr_id: str) -> None:
        self.crictl("start", ctr_id)

    def stop(self, ctr_id: str, timeout: int = 0) -> None:
        """StopContainer with the given grace period in seconds (0: SIGKILL at once)."""
        self.crictl("stop", "--timeout", str(timeout), ctr_id)

    def remove(self, ctr_id: str) -> None:
        self.crictl("rm", "--force", ctr_id)

    def container_status(self, ctr_id: str) -> dict[str, Any]:
        """`crictl inspect` output (status, info incl. pid and runtime spec)."""
        return json.loads(self.crictl("inspect", "-o", "json", ctr_id).stdout)

    def container_pid(self, ctr_id: str) -> int:
        pid = self.container_status(ctr_id).get("info", {}).get("pid", 0)
        if not pid:
            raise TestbedError(f"container {ctr_id} has no running process")
        return int(pid)

    def wait_exit(self, ctr_id: str, timeout: float = 30.0, poll: float = 0.05) -> int:
        """Wait until the container has exited; return its exit code."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.container_status(ctr_id)["status"]
            if status.get("state") == "CONTAINER_EXITED":
                return int(status.get("exitCode", 0))
            if time.monotonic() > deadline:
                raise TestbedError(f"container {ctr_id} still {status.get('state')} "
                                   f"after {timeout}s")
            time.sleep(poll)

    def exec(self, ctr_id: str, *cmd: str, check: bool = True,
             timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a command in a running container (`crictl exec`, synchronous)."""
        return self.crictl("exec", ctr_id, *cmd, check=check, timeout=timeout)

    def logs(self, ctr_id: str) -> str:
        """The container's stdout and stderr as crictl logs shows them."""
        r = self.crictl("logs", ctr_id)
        return r.stdout + r.stderr

    def run_container(self, pod: Mapping[str, Any] | str | os.PathLike,
                      container: Mapping[str, Any] | str | os.PathLike) -> tuple[str, str]:
        """run_pod + create_container + start; returns (pod_id, ctr_id)."""
        pod_id = self.run_pod(pod)
        ctr_id = self.create_container(pod_id, container)
        self.start(ctr_id)
        return pod_id, ctr_id

    def pods(self) -> list[str]:
        return self.crictl("pods", "-q").stdout.split()

    def containers(self, pod_id: str | None = None) -> list[str]:
        args = ["ps", "-a", "-q"] + (["--pod", pod_id] if pod_id else [])
        return self.crictl(*args).stdout.split()

    def stop_pod(self, pod_id: str) -> None:
        self.crictl("stopp", pod_id)

    def remove_pod(self, pod_id: str) -> None:
        """Stop (if needed) and remove the pod and its containers."""
        self.crictl("rmp", "--force", pod_id)
        self._pod_configs.pop(pod_id, None)

    def remove_all_pods(self) -> None:
        """Remove every pod of this instance (the per-test cleanup).

        A pod that vanishes meanwhile (removed by a test's own background work) is fine; any
        other failure is raised after every pod was tried.
        """
        errors: list[str] = []
        for pod_id in self.pods():
            self._seen_ids.add(pod_id)
            try:
                self._seen_ids.update(self.containers(pod_id))
                self.remove_pod(pod_id)
            except TestbedError as exc:
                if pod_id in self.pods():
                    errors.append(str(exc))
        if errors:
            raise TestbedError("; ".join(errors))

    # ------------------------------------------------------------------ teardown
    def _cgroup_controller_dirs(self) -> list[Path]:
        """Each cgroup hierarchy root (v1 controllers, or the single v2 root)."""
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return [CGROUP_ROOT]
        try:
            return sorted(p for p in CGROUP_ROOT.iterdir()
                          if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists())
        except OSError:
            return []

    def _instance_ids(self) -> set[str]:
        """Every pod/container id this instance ever had, from memory and from disk."""
        ids = set(self._seen_ids)
        for d in (self.runc_root,
                  self.dir / "state" / "io.containerd.runtime.v2.task" / K8S_NAMESPACE,
                  self.dir / "root" / "io.containerd.grpc.v1.cri" / "containers",
                  self.dir / "root" / "io.containerd.grpc.v1.cri" / "sandboxes"):
            try:
                ids.update(p.name for p in d.iterdir())
            except OSError:
                pass
        return ids

    def _instance_pids(self) -> list[int]:
        """Shims of this instance (by their -address argument) and processes in its cgroups."""
        sock = str(self.cri_socket)
        pids: set[int] = set()
        for pid in _all_pids():
            argv = _cmdline(pid)
            if argv and "containerd-shim" in os.path.basename(argv[0]):
                if sock in argv:
                    pids.add(pid)
        for ctl in self._cgroup_controller_dirs():
            tree = ctl / self.cgroup_parent.lstrip("/")
            if not tree.is_dir():
                continue
            for procs in tree.rglob("cgroup.procs"):
                try:
                    pids.update(int(x) for x in procs.read_text().split())
                except (OSError, ValueError):
                    pass
        pids.discard(os.getpid())
        return sorted(pids)

    def _runc_force_delete(self) -> None:
        if not self.runc_root.is_dir():
            return
        try:
            runc = str(runc_path())
        except MissingPrerequisite:
            return
        for cid in sorted(p.name for p in self.runc_root.iterdir()):
            r = subprocess.run([runc, "--root", str(self.runc_root), "delete", "--force", cid],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                log.warning("runc delete failed id=%s err=%s", cid, r.stderr.strip())

    def _remove_cgroups(self, ids: set[str]) -> None:
        for ctl in self._cgroup_controller_dirs():
            roots = [ctl / self.cgroup_parent.lstrip("/")]
            roots += [ctl / K8S_NAMESPACE / i for i in ids]
            for root in roots:
                if not root.is_dir():
                    continue
                # rmdir bottom-up: cgroup dirs go with rmdir only, never with unlink.
                for d in sorted((p for p in root.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True) + [root]:
                    try:
                        d.rmdir()
                    except OSError as exc:
                        log.warning("cgroup dir not removed path=%s err=%s", d, exc)
            k8s = ctl / K8S_NAMESPACE
            if not self._k8s_cgroup_preexisting.get(str(ctl), True) and k8s.is_dir():
                try:
                    k8s.rmdir()
                except OSError:
                    pass  # still used by another instance or by hand-made pods

    def _remove_shim_sockets(self, ids: set[str]) -> None:
        for cid in ids:
            h = hashlib.sha256(f"{self.cri_socket}/{K8S_NAMESPACE}/{cid}".encode()).hexdigest()
            try:
                (SHIM_SOCKET_DIR / h).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("shim socket not removed id=%s err=%s", cid, exc)

    def _unmount_all(self) -> list[str]:
        for mp in _mount_points_under(self.dir):
            err = _umount(mp)
            if err not in (0, errno.EINVAL, errno.ENOENT):
                err = _umount(mp, _MNT_DETACH)
            if err not in (0, errno.EINVAL, errno.ENOENT):
                log.warning("unmount failed path=%s errno=%s", mp, err)
        return _mount_points_under(self.dir)

    def _rmtree_same_fs(self, root: Path) -> None:
        """Remove root without ever crossing into another filesystem (a missed mount)."""
        dev = root.lstat().st_dev
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            for name in filenames:
                p = Path(dirpath) / name
                try:
                    if p.lstat().st_dev == dev:
                        p.unlink()
                except FileNotFoundError:
                    pass
            for name in dirnames:
                p = Path(dirpath) / name
                try:
                    if p.is_symlink():
                        p.unlink()
                    elif p.lstat().st_dev == dev:
                        p.rmdir()
                except FileNotFoundError:
                    pass
        root.rmdir()

    def down(self) -> None:
        """Tear everything down. Safe to call twice and after a failed or partial up()."""
        if self._dir is None:
            return
        d = self._dir
        t0 = time.monotonic()
        ids = self._instance_ids()
        if self.containerd_pid is not None:
            # Polite path first; a wedged containerd (e.g. a stuck NRI plugin) must not make
            # teardown slow, so one failure ends it and the forced path below cleans up.
            try:
                for pod_id in self.pods():
                    ids.add(pod_id)
                    ids.update(self.containers(pod_id))
                    self.crictl("rmp", "--force", pod_id, timeout=20)
            except TestbedError as exc:
                log.warning("pod removal via CRI failed, forcing err=%s", exc)
            self.stop_containerd()
        ids |= self._instance_ids()
        # What containerd did not clean up: container processes (runc), then shims.
        self._runc_force_delete()
        leftovers = self._instance_pids()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if leftovers:
            log.info("killed leftover processes pids=%s", leftovers)
            still = _wait_gone(leftovers, 10)
            if still:
                log.error("processes survived SIGKILL pids=%s", still)
        remaining_mounts = self._unmount_all()
        self._remove_cgroups(ids)
        self._remove_shim_sockets(ids)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if remaining_mounts:
            log.error("mounts remain, leaving dir=%s mounts=%s", d, remaining_mounts)
        else:
            try:
                self._rmtree_same_fs(d)
            except OSError as exc:
                log.error("instance dir not fully removed dir=%s err=%s", d, exc)
        self._dir = None
        self._pid = None
        self._proc = None
        self._pod_configs.clear()
        self._seen_ids.clear()
        log.info("testbed down dir=%s s=%.3f", d, time.monotonic() - t0)
