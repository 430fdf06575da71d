"""The sandbox's warm worker: run as a script (``python -I sandbox_zygote.py``), never imported by llmjobs.

It imports the preloaded modules once (SymPy takes about a second), then for each request line (JSON: code
and limits) forks a child that runs the code in a fresh namespace in its own temporary directory, under
rlimits, as its own process group (and, when this worker runs as root, as the unprivileged ``nobody``).
The worker waits for the child with the wall-time limit, kills its whole process group, then every other
process below it (it is the subreaper of what the item started, so a process that left the group with
``setsid`` still comes back to it), reads at most ``output_bytes`` of its stdout and stderr, removes its
directory and answers one JSON line.

Standard library only: it runs inside the sandbox, where llmjobs itself is not importable.
"""

import builtins
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback

NOBODY = 65534


def _limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        _, hard = resource.getrlimit(which)
        resource.setrlimit(which, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard))


def _child(code, workdir, lim, drop):
    try:
        os.setsid()  # its own process group: the worker kills the whole group at the end
        os.chdir(workdir)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            f = os.open(os.path.join(workdir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
        os.closerange(3, 65536)  # the request and answer pipes among them: the code cannot talk to the pool
        if drop:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        _limit(resource.RLIMIT_CORE, 0)
        _limit(resource.RLIMIT_CPU, int(lim["cpu_s"]))
        _limit(resource.RLIMIT_AS, int(lim["memory_mb"]) << 20)
        _limit(resource.RLIMIT_NPROC, int(lim["nproc"]))
        _limit(resource.RLIMIT_FSIZE, int(lim["file_mb"]) << 20)
        _limit(resource.RLIMIT_NOFILE, int(lim["open_files"]))
        os.environ.clear()
        os.environ.update({"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        tempfile.tempdir = workdir
        # the child's own streams for its whole life (it ends with os._exit)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115
        sys.argv = ["<sandbox>"]
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        status = 0
        try:
            exec(compile(code, "<sandbox>", "exec"), namespace)  # noqa: S102  the point of the sandbox
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001  the traceback is the item's stderr
            traceback.print_exc()
            status = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001, S110
            pass
        os._exit(status & 0xFF)
    except BaseException:  # noqa: BLE001  the setup itself failed: say why in the item's stderr
        try:
            with open(os.path.join(workdir, "stderr"), "a") as f:
                f.write("sandbox setup failed:\n" + traceback.format_exc())
        except BaseException:  # noqa: BLE001, S110
            pass
        os._exit(125)


def _reap():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _kill_group(pgid):
    """SIGKILL the group until it is gone: a fork bomb may add members while the first signal goes out.
    Killed members are reaped here (this worker is their subreaper), so the group empties."""
    for _ in range(500):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            return
        _reap()
        time.sleep(0.001)


def _descendants():
    """Every process below this worker (orphans come back to it: it is their subreaper)."""
    me = os.getpid()
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                parent[int(name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    below, frontier = set(), {me}
    while frontier:
        frontier = {pid for pid, pp in parent.items() if pp in frontier and pid not in below}
        below |= frontier
    return below


def _sweep():
    """Kill what an item left outside its group (a process that called setsid), then reap."""
    for _ in range(50):
        left = _descendants()
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap()
        time.sleep(0.001)


def _read(path, cap):
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError:
        return "", False
    return data[:cap].decode("utf-8", "replace"), len(data) > cap


def main():
    config = json.loads(sys.argv[1])
    base = config["base"]
    try:  # PR_SET_CHILD_SUBREAPER: an item's orphans become this worker's children, to be killed and reaped
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    drop = os.getuid() == 0
    for module in config.get("preload", []):
        try:
            __import__(module)
        except ImportError:
            pass
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    requests = os.fdopen(os.dup(0), "r")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    answers.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in requests:
        req = json.loads(line)
        lim = req["limits"]
        workdir = tempfile.mkdtemp(dir=base)
        if drop:
            os.chown(workdir, NOBODY, NOBODY)
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            requests.close()
            answers.close()
            _child(req["code"], workdir, lim, drop)
        deadline = start + float(lim["wall_s"])
        timed_out = False
        pause = 0.001
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if not timed_out and time.monotonic() > deadline:
                timed_out = True
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                pause = 0.001
            time.sleep(pause)
            pause = min(0.02, pause * 2)
        seconds = time.monotonic() - start
        _kill_group(pid)  # what the item started and left behind in its group
        _sweep()
        cap = int(lim["output_bytes"])
        out, out_cut = _read(os.path.join(workdir, "stdout"), cap)
        err, err_cut = _read(os.path.join(workdir, "stderr"), cap)
        shutil.rmtree(workdir, ignore_errors=True)
        if os.WIFSIGNALED(status):
            code, sig = -os.WTERMSIG(status), os.WTERMSIG(status)
        else:
            code, sig = os.WEXITSTATUS(status), 0
        answers.write(json.dumps({"exit": code, "signal": sig, "timed_out": timed_out, "stdout": out,
                                  "stderr": err, "stdout_truncated": out_cut, "stderr_truncated": err_cut,
                                  "seconds": seconds}) + "\n")


if __name__ == "__main__":
    main()
