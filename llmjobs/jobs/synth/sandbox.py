"""Run model-written Python on a shared compute node: no Docker, no root needed, warm workers.

``with Sandbox(Limits(wall_s=10)) as box: box.run_many([code, ...])`` returns one ``Execution`` per program.

Layers (docs/synthesis.md, "Code sandbox", says what each guarantees and what it does not):
- bubblewrap (``bwrap``), when it is installed and can create its namespaces here (checked at start): a new
  mount namespace holding only the Python installation (read-only) and the sandbox's own temporary
  directory (read-write); no network (``--unshare-net``: only a loopback device that is down), its own PID
  namespace (the code sees no other process and can signal none), IPC and UTS namespaces, all capabilities
  dropped (as root: all but those the worker needs to switch to ``nobody`` and to kill what an item left).
- rlimits, always: CPU seconds, address space, processes, file size, open files, no core files.
- the worker: the wall-time limit kills the item's whole process group, then (inside bwrap's PID namespace)
  every process the item left; stdout and stderr are read up to ``output_bytes``; the item's directory is
  removed. Running as root, each item switches to the unprivileged user ``nobody`` first.
- without bwrap (``isolation="rlimits"``): rlimits, the process group kill and (as root) ``nobody`` only:
  no network isolation, and the code can read and write whatever its user can.

Warm workers: each worker (one per ``workers``) is a long-lived process that imported SymPy once and forks a
fresh child per program, so an item costs a fork, not an interpreter start and a SymPy import.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Self

log = logging.getLogger("llmjobs.synth.sandbox")

ZYGOTE = Path(__file__).with_name("sandbox_zygote.py")
Isolation = Literal["auto", "bwrap", "rlimits"]


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    nproc: int = 32  # processes of the item's user (in bwrap's user namespace, or of nobody as root)
    file_mb: int = 16  # largest file the item may write, its stdout and stderr included
    open_files: int = 64
    output_bytes: int = 65536  # stdout and stderr returned, each


@dataclass(frozen=True)
class Execution:
    exit: int  # exit status; -N: killed by signal N
    stdout: str
    stderr: str
    status: Literal["ok", "error", "timeout", "killed", "sandbox_error"]
    seconds: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _python_roots() -> list[str]:
    """What the interpreter needs to run: its installation and the environment's (read-only binds)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    try:
        import sympy

        roots.add(os.path.dirname(os.path.dirname(os.path.realpath(sympy.__file__))))  # its site-packages
    except ImportError:
        pass
    return sorted(r for r in roots if r and os.path.isdir(r))


def _bwrap_args(base: str, root: bool) -> list[str]:
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-net", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try"]
    if not root:
        args.append("--unshare-user")
    for system in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/localtime"):
        args += ["--ro-bind-try", system, system]
    roots = _python_roots()
    # the directories above each bind are made by bwrap (0700 as root): open them, or nobody cannot pass
    above = sorted({str(a) for r in [*roots, base] for a in Path(r).parents if str(a) != "/"}, key=len)
    for d in above:
        args += ["--perms", "0755", "--dir", d]
    for path in roots:
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--bind", base, base, "--ro-bind", str(ZYGOTE), "/zygote.py",
             "--chdir", base, "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
    if root:
        # the worker's own: switch each item to nobody, hand it its directory, read and remove what it wrote,
        # kill what it left; an item loses every capability when it switches to nobody
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"):
            args += ["--cap-add", cap]
        args[args.index("--die-with-parent"):args.index("--die-with-parent")] = ["--cap-drop", "ALL"]
    return args


def bwrap_usable() -> bool:
    """bubblewrap is installed and can create its namespaces here (unprivileged user namespaces may be off)."""
    if shutil.which("bwrap") is None:
        return False
    root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="llmjobs-bwrap-check-") as base:
        cmd = [*_bwrap_args(base, root), sys.executable, "-I", "-c", "pass"]
        try:
            return subprocess.run(cmd, check=False, capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


class _Worker:
    def __init__(self, base: str, isolation: str, preload: tuple[str, ...]) -> None:
        self.base = base
        self.isolation = isolation
        self.preload = preload
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()  # one item at a time per worker, whichever thread asks
        self.start()

    def start(self) -> None:
        root = os.geteuid() == 0
        config = json.dumps({"base": self.base, "pidns": self.isolation == "bwrap", "preload": list(self.preload)})
        if self.isolation == "bwrap":
            cmd = [*_bwrap_args(self.base, root), sys.executable, "-I", "-B", "/zygote.py", config]
            env = None
        else:
            cmd = [sys.executable, "-I", "-B", str(ZYGOTE), config]
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, cwd=self.base, start_new_session=True)
        ready = self._readline(120.0)
        if ready is None or not json.loads(ready).get("ready"):
            self.close()
            raise RuntimeError(f"the sandbox worker did not start ({self.isolation})")

    def _readline(self, timeout: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line.decode() if line else None

    def run(self, code: str, limits: Limits) -> Execution:
        with self.lock:
            return self._run(code, limits)

    def _run(self, code: str, limits: Limits) -> Execution:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"code": code, "limits": asdict(limits)}) + "\n").encode())
            self.proc.stdin.flush()
            line = self._readline(limits.wall_s + 30.0)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:  # the worker died (killed by the item, in rlimits mode) or hung: a fresh one
            self.close()
            self.start()
            return Execution(-1, "", "the sandbox worker died while running this item", "sandbox_error", 0.0)
        r = json.loads(line)
        if r["timed_out"]:
            status = "timeout"
        elif r["signal"]:
            status = "killed"  # SIGXCPU / SIGKILL of the CPU limit, SIGXFSZ of the file limit, ...
        elif r["exit"] == 0:
            status = "ok"
        else:
            status = "error"
        return Execution(r["exit"], r["stdout"], r["stderr"], status, r["seconds"], r["stdout_truncated"],
                         r["stderr_truncated"])

    def close(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                pass
            self.proc.wait()
            self.proc = None


class Sandbox:
    """A pool of warm sandboxed workers. ``isolation``: ``auto`` uses bwrap where it works, else rlimits (and
    logs that the network and the file system are then not isolated); ``bwrap`` insists on it."""

    def __init__(self, limits: Limits | None = None, workers: int = 1, isolation: Isolation = "auto",
                 preload: tuple[str, ...] = ("sympy",)) -> None:
        self.limits = limits or Limits()
        if isolation == "auto":
            isolation = "bwrap" if bwrap_usable() else "rlimits"
        elif isolation == "bwrap" and not bwrap_usable():
            raise RuntimeError("bubblewrap (bwrap) is not installed or cannot create namespaces on this node")
        if isolation == "rlimits":
            log.warning("sandbox without bubblewrap: rlimits only; the code has network access and the file "
                        "access of its user")
        self.isolation = isolation
        self.base = tempfile.mkdtemp(prefix="llmjobs-sandbox-")
        os.chmod(self.base, 0o711)  # items' own directories inside are owned by the item's user
        self._workers = [_Worker(self.base, isolation, preload) for _ in range(max(1, workers))]

    def run(self, code: str, limits: Limits | None = None) -> Execution:
        return self._workers[0].run(code, limits or self.limits)

    def run_many(self, codes: list[str], limits: Limits | None = None) -> list[Execution]:
        """Every program once, spread over the workers; results in input order."""
        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(codes)):
            todo.put(i)
        out: list[Execution | None] = [None] * len(codes)

        def drain(worker: _Worker) -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                out[i] = worker.run(codes[i], limits or self.limits)

        threads = [threading.Thread(target=drain, args=(w,)) for w in self._workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out  # type: ignore[return-value]

    def close(self) -> None:
        for w in self._workers:
            w.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
