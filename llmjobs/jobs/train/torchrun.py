"""``torch.distributed.run`` behind the two settings a job's children need: ignore the walltime signal (the
kind relays it as a stop flag, so every rank stops at the same step) and die with the job process (a
SIGKILLed job must not leave trainers behind)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def detach_from_walltime_signal() -> None:
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


if __name__ == "__main__":
    detach_from_walltime_signal()
    from torch.distributed.run import main

    sys.argv[0] = "torchrun"
    main()
