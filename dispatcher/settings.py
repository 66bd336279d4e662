"""Hold the dispatcher's settings, read once from arguments and ``COVALENT_*`` variables."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from covalent.config import DEFAULT_PORT

from .worker.blobs import is_url


# The ``COVALENT_*`` variables the server reads from its environment that ``covalent start``
# has no Click option reading them for: start saves the ones it was given in server.json and
# ``covalent restart`` hands them back (unless its own shell sets them).
SERVER_VARIABLES = (
    "COVALENT_WORKERS", "COVALENT_THREADS_PER_WORKER", "COVALENT_MEM_PER_WORKER",
    "COVALENT_SCHEDULER_ADDRESS", "COVALENT_CLUSTER", "COVALENT_CLUSTER_KWARGS", "COVALENT_ADAPT",
    "COVALENT_NO_WORKER_TIMEOUT", "COVALENT_TIME_LIMIT_GRACE", "COVALENT_SCHEDULER_PROCESS",
    "COVALENT_CLUSTER_COMM", "COVALENT_ALLOWED_HOSTS", "COVALENT_MAX_CONNECTIONS",
    "COVALENT_LOG_MAX_BYTES", "COVALENT_SUBMIT_CHUNKS",
)


def default_data_dir() -> Path:
    """``$COVALENT_DATA_DIR``, else ``$XDG_DATA_HOME/covalent``, else ``~/.local/share/covalent``."""
    env = os.environ.get("COVALENT_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "covalent"


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """The embedded LocalCluster, ``address`` of an existing Dask scheduler, or a cluster
    manager the dispatcher creates: ``cluster_class`` (an import path such as
    ``dask_jobqueue.SLURMCluster``) called with ``cluster_kwargs``. ``adapt`` (minimum,
    maximum) scales the embedded or created cluster with the load; else ``n_workers`` fixes
    its size."""

    address: str | None = None
    cluster_class: str | None = None
    cluster_kwargs: dict[str, Any] = field(default_factory=dict)
    adapt: tuple[int, int] | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | None = "auto"
    processes: bool = True
    dashboard_address: str | None = "127.0.0.1:8787"
    host: str = "127.0.0.1"
    # How the embedded process cluster talks, closed to the machine's other users either way:
    # "unix", sockets in a directory only its user may enter (dispatcher/unix_comm.py), or
    # "tls", with credentials made fresh at each start (COVALENT_CLUSTER_COMM)
    comm: str = "unix"
    # The embedded scheduler in a process of its own (else in the dispatcher's, sharing its
    # GIL): see README "Architecture" for the measurements behind the default.
    scheduler_process: bool = True
    connect_timeout_s: float = 10.0  # an external scheduler that does not answer by then
    # A task no worker can run (resources or workers nobody has) fails after this many seconds
    # instead of waiting forever; None: the default (60 s on the embedded cluster without
    # --adapt; never where workers may still come: --adapt, --cluster, --scheduler-address).
    no_worker_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.comm not in ("unix", "tls"):
            raise ValueError(f"COVALENT_CLUSTER_COMM is 'unix' or 'tls', not {self.comm!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``create_app`` needs."""

    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str = ""
    allowed_hosts: tuple[str, ...] = ()  # names besides loopback requests may use in Host
    # How the workers reach this server (a sublattice submits its child dispatch there and
    # waits on it): "" is ``url``, which names this machine's loopback when bound to every
    # interface. Replicas all give the load balancer's URL (docs/team.md).
    public_url: str = ""
    instance_id: str = ""  # reported by /health so `covalent start` knows it is its own server
    holds_data_dir: bool = False  # this process holds the data dir's lock (dispatcher.instance)
    # Where workers write node outputs: the data dir's blobs (the embedded default, or workers
    # on this machine), or any fsspec URL all workers and the server reach (s3://bucket/prefix).
    store_url: str = ""
    store_options: dict[str, Any] = field(default_factory=dict)  # fsspec storage options
    # The database: "" for the embedded SQLite file in the data dir, else a URL
    # (postgresql://user:password@host:port/db, sqlite:///path); see dispatcher.store.
    db_url: str = ""
    max_body_bytes: int = 2 * 1024**3
    max_connections: int = 1000  # beyond it new connections are answered 503 (issue #11)
    log_max_bytes: int = 64 << 20  # server.log is rotated past this size (issue #21)
    long_poll_max_s: float = 120.0
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    # The [executors.<name>] tables of the config file, read at start (see dispatcher.executors),
    # and where they came from; how long a node past its time limit may take to stop.
    executors: dict[str, Any] = field(default_factory=dict)
    config_source: str = ""
    time_limit_grace: float = 10.0

    @property
    def no_worker_timeout(self) -> float | None:
        """Seconds a task may wait for a worker that can run it (see ClusterSettings)."""
        cs = self.cluster
        if cs.no_worker_timeout is not None:
            return cs.no_worker_timeout if cs.no_worker_timeout > 0 else None
        return None if cs.address or cs.cluster_class or cs.adapt else 60.0

    @property
    def url(self) -> str:
        """How clients on this machine reach the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def worker_url(self) -> str:
        """How the workers reach the server: ``public_url``, else ``url`` ("" on port 0: the
        runner learns it from the first submission)."""
        return self.public_url or (self.url if self.port else "")

    def with_port(self, port: int) -> Settings:
        return replace(self, port=port)

    def with_instance(self, instance_id: str) -> Settings:
        return replace(self, instance_id=instance_id)

    def holding_data_dir(self) -> Settings:
        return replace(self, holds_data_dir=True)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "dispatches.db"

    @property
    def blob_dir(self) -> Path:
        """The local directory of blobs: a local ``store_url`` (a shared file system all
        workers mount), else the data dir's ``blobs``."""
        if self.store_url and not is_url(self.store_url):
            return Path(self.store_url.removeprefix("file://")).expanduser().absolute()
        return self.data_dir / "blobs"

    @property
    def upload_dir(self) -> Path:
        """Where large parts of a request are written as they arrive (emptied at start)."""
        return self.data_dir / "uploads"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def store_root(self) -> str:
        """Where node outputs live: a ``store_url`` that is a URL, else ``blob_dir``."""
        return self.store_url if is_url(self.store_url) else str(self.blob_dir)

    @property
    def run_dir(self) -> Path:
        """The embedded cluster's own files: its scheduler's log, its sockets' directories."""
        return self.data_dir / "run"

    @property
    def tls_dir(self) -> Path:
        """Where the embedded cluster's temporary TLS credentials are kept (0600 files)."""
        return self.data_dir / "tls"

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings from ``COVALENT_*`` variables; ``overrides`` that are not None win."""
        env = os.environ
        cluster = ClusterSettings(
            address=env.get("COVALENT_SCHEDULER_ADDRESS") or None,
            cluster_class=env.get("COVALENT_CLUSTER") or None,
            cluster_kwargs=json_object(env.get("COVALENT_CLUSTER_KWARGS")),
            adapt=parse_adapt(env.get("COVALENT_ADAPT")),
            no_worker_timeout=_float(env.get("COVALENT_NO_WORKER_TIMEOUT")),
            n_workers=_int(env.get("COVALENT_WORKERS")),
            threads_per_worker=_int(env.get("COVALENT_THREADS_PER_WORKER")),
            memory_limit=env.get("COVALENT_MEM_PER_WORKER") or "auto",
            scheduler_process=_flag(env.get("COVALENT_SCHEDULER_PROCESS"), True),
            comm=env.get("COVALENT_CLUSTER_COMM") or "unix",
        )
        s = cls(
            host=env.get("COVALENT_SERVER_HOST", "127.0.0.1"),
            port=_int(env.get("COVALENT_SERVER_PORT")) or DEFAULT_PORT,
            token=env.get("COVALENT_TOKEN", ""),
            allowed_hosts=tuple(h for h in env.get("COVALENT_ALLOWED_HOSTS", "").split(",") if h),
            public_url=parse_public_url(env.get("COVALENT_PUBLIC_URL")),
            instance_id=env.get("COVALENT_INSTANCE_ID", ""),
            store_url=env.get("COVALENT_STORE_URL", ""),
            store_options=json_object(env.get("COVALENT_STORE_OPTIONS")),
            db_url=env.get("COVALENT_DB_URL", ""),
            max_connections=_int(env.get("COVALENT_MAX_CONNECTIONS")) or 1000,
            log_max_bytes=_int(env.get("COVALENT_LOG_MAX_BYTES")) or 64 << 20,
            cluster=cluster,
            time_limit_grace=_float(env.get("COVALENT_TIME_LIMIT_GRACE")) or 10.0,
        )
        cluster_keys = {"address", "n_workers", "threads_per_worker", "memory_limit",
                        "dashboard_address", "scheduler_process", "cluster_class",
                        "cluster_kwargs", "adapt", "no_worker_timeout"}  # the rest is top-level
        top = {k: v for k, v in overrides.items() if v is not None and k not in cluster_keys}
        sub = {k: v for k, v in overrides.items() if v is not None and k in cluster_keys}
        return replace(s, **top, cluster=replace(s.cluster, **sub))


def pinned_dashboard(address: str | None) -> str | None:
    """Dask binds a dashboard address without a host (":0", "8787") on every interface:
    give it the loopback host instead.

    >>> pinned_dashboard(":0"), pinned_dashboard("8787"), pinned_dashboard("0.0.0.0:8787")
    ('127.0.0.1:0', '127.0.0.1:8787', '0.0.0.0:8787')
    """
    if address is None:
        return None
    host, sep, port = address.rpartition(":")
    if not port.isdigit() or int(port) > 65535:  # else the scheduler's process dies of it
        raise ValueError(f"--dashboard-address takes HOST:PORT or :PORT (0: any free port), "
                         f"got {address!r}")
    if not sep:
        return f"127.0.0.1:{address}"
    return address if host else f"127.0.0.1:{port}"


def json_object(v: str | None) -> dict[str, Any]:
    """A JSON object from a variable or an option; ValueError with the reason otherwise."""
    if not v:
        return {}
    try:
        parsed = json.loads(v)
    except ValueError as exc:
        raise ValueError(f"expected a JSON object, got {v!r}: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"expected a JSON object, got {v!r}")
    return parsed


def parse_public_url(v: str | None) -> str:
    """The URL workers reach the server at, without a trailing slash; ValueError otherwise.

    >>> parse_public_url("http://lb.example:48008/"), parse_public_url(None)
    ('http://lb.example:48008', '')
    >>> parse_public_url("lb.example:48008")
    Traceback (most recent call last):
    ...
    ValueError: --public-url takes http://host:port (how the workers reach this dispatcher; no path), got 'lb.example:48008'
    """
    if not v:
        return ""
    parts = urlsplit(v)
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        parts = parts._replace(netloc="")
    if (parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment):  # (what the SDK's client can reach)
        raise ValueError("--public-url takes http://host:port (how the workers reach this "
                         f"dispatcher; no path), got {v!r}")
    return v.rstrip("/")


def parse_adapt(v: str | None) -> tuple[int, int] | None:
    """``MIN:MAX`` workers for adaptive scaling; ValueError with the reason otherwise.

    >>> parse_adapt("0:20"), parse_adapt(None)
    ((0, 20), None)
    >>> parse_adapt("5:2")
    Traceback (most recent call last):
    ...
    ValueError: --adapt takes MIN:MAX workers with 0 <= MIN <= MAX, got '5:2'
    """
    if not v:
        return None
    low, sep, high = v.partition(":")
    try:
        bounds = (int(low), int(high)) if sep else (0, int(low))
    except ValueError:
        bounds = (1, 0)
    if not 0 <= bounds[0] <= bounds[1] or bounds[1] == 0:
        raise ValueError(f"--adapt takes MIN:MAX workers with 0 <= MIN <= MAX, got {v!r}")
    return bounds


def _float(v: str | None) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"expected a number, got {v!r}") from None


def _int(v: str | None) -> int | None:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"expected an integer, got {v!r}") from None


def _flag(v: str | None, default: bool) -> bool:
    """A yes/no variable: 1/true/yes or 0/false/no (anything else: ValueError)."""
    if v is None or v == "":
        return default
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1 or 0 (true/false), got {v!r}")
