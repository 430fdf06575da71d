"""A Ray cluster inside a (multi-node) allocation, for the life of one step.

Rank 0 starts the head, every other rank a worker that joins it; rank 0 then runs the driver while the
others wait for the stop file (or for their raylet to die with the head). Every ``ray start`` runs with
``--block`` in its own session, so stopping it stops exactly the Ray processes this step started, never
another job's Ray on a shared node.

Security: Ray 2.5x+ checks a shared token when ``RAY_AUTH_MODE=token``; the token (256 random bits) lives
in a 0600 file in the step directory (on the shared filesystem, readable by the user only) and every Ray
process and the driver find it through ``RAY_AUTH_TOKEN_PATH``. Ports are free ports picked at start, so two
steps on one node do not collide. Ray's temp dir (sockets, logs, object spill) is on node-local scratch:
``LLMJOBS_SCRATCH``, else ``TMPDIR``, else ``/tmp``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

log = logging.getLogger("llmjobs.eval.ray")

HEAD_FILE = "head-address"
STOP_FILE = "stop"
TOKEN_FILE = "auth_token"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    """The address other nodes reach this one at: the interface that routes to the outside."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; this only picks the route
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def scratch_dir() -> Path:
    return Path(os.environ.get("LLMJOBS_SCRATCH") or os.environ.get("TMPDIR") or "/tmp")


def write_token(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


def _wait_for(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.5)
    return False


class RayCluster:
    """``with RayCluster(state_dir, rank, world_size) as cluster:`` on every rank.

    On rank 0 the block runs with the driver connected (``cluster.address``); on the other ranks ``wait()``
    returns when rank 0 is done. ``state_dir`` must be shared by all ranks (the step directory).
    """

    def __init__(self, state_dir: Path, rank: int = 0, world_size: int = 1, num_cpus: int | None = None,
                 num_gpus: int | None = None, join_timeout: float = 300.0) -> None:
        self.state_dir = Path(state_dir)
        self.rank, self.world_size = rank, world_size
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.join_timeout = join_timeout
        self.token = self.state_dir / TOKEN_FILE
        self.address: str | None = None
        self._proc: subprocess.Popen | None = None
        self._temp: Path | None = None

    # -- environment
    def _env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token),
                "RAY_USAGE_STATS_ENABLED": "0",
                # the driver is done when we stop a node: nothing to drain
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}

    def _start(self, args: list[str]) -> None:
        # a short path: Ray's unix socket paths must stay under 108 bytes
        self._temp = Path(tempfile.mkdtemp(prefix="ljray-", dir=scratch_dir()))
        ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
        cmd = [ray, "start", "--block", f"--temp-dir={self._temp}", "--disable-usage-stats",
               f"--node-ip-address={node_ip()}",
               f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
               f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}", *args]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        if self.num_gpus is not None:
            cmd.append(f"--num-gpus={self.num_gpus}")
        log.info("rank %d: %s", self.rank, " ".join(cmd))
        self._proc = subprocess.Popen(cmd, env={**os.environ, **self._env()}, start_new_session=True)

    def __enter__(self) -> Self:
        os.environ.update(self._env())  # the driver (this process) authenticates with the same token
        if "ray._raylet" in sys.modules:  # Ray read RAY_AUTH_MODE when it was imported: make it read again
            from ray._raylet import Config

            Config.initialize("")
        try:
            if self.rank == 0:
                self._enter_head()
            else:
                self._enter_worker()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _enter_head(self) -> None:
        for stale in (HEAD_FILE, STOP_FILE):
            (self.state_dir / stale).unlink(missing_ok=True)
        write_token(self.token)
        port = free_port()
        self._start(["--head", f"--port={port}", "--include-dashboard=false",
                     f"--ray-client-server-port={free_port()}"])
        self.address = f"{node_ip()}:{port}"
        import ray

        deadline = time.monotonic() + self.join_timeout
        while True:  # the GCS needs a moment before it takes connections
            try:
                ray.init(address=self.address, log_to_driver=False)
                break
            except Exception:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise
                time.sleep(1)
        tmp = self.state_dir / f".{HEAD_FILE}.tmp"
        tmp.write_text(self.address)
        os.replace(tmp, self.state_dir / HEAD_FILE)
        while len([n for n in ray.nodes() if n.get("Alive")]) < self.world_size:
            if time.monotonic() > deadline:
                alive = len([n for n in ray.nodes() if n.get("Alive")])
                raise RuntimeError(f"only {alive} of {self.world_size} nodes joined the Ray cluster "
                                   f"within {self.join_timeout:.0f}s")
            time.sleep(1)
        log.info("Ray cluster of %d nodes up at %s", self.world_size, self.address)

    def _enter_worker(self) -> None:
        head = self.state_dir / HEAD_FILE
        if not _wait_for(head, self.join_timeout) or not self.token.exists():
            raise RuntimeError(f"rank {self.rank}: no Ray head address in {head} after {self.join_timeout:.0f}s")
        self.address = head.read_text().strip()
        self._start([f"--address={self.address}"])

    def wait(self) -> None:
        """On a worker rank: block until rank 0 is done (stop file) or this node's Ray died."""
        stop = self.state_dir / STOP_FILE
        while not stop.exists():
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"rank {self.rank}: the Ray worker exited before the driver finished")
            time.sleep(1)

    def __exit__(self, *exc) -> None:
        if self.rank == 0:
            try:
                import ray

                ray.shutdown()
            except Exception as err:  # noqa: BLE001 - stopping the nodes below matters more
                log.warning("ray.shutdown failed: %s", err)
            (self.state_dir / STOP_FILE).write_text("done\n")
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # raylet's workers may outlive `ray start`; they are in its session, so the group goes too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
