"""No rank hangs for a dead peer: an exception anywhere aborts the job; signals stop it cleanly."""
from __future__ import annotations

import signal
import sys
import time
import traceback
from typing import Any

#: Seconds between printing a rank's traceback and aborting the job.
ABORT_GRACE_SECONDS = 1.0


def report_and_abort(comm: Any, role: str, exc: BaseException) -> None:
    """Print ``rank N (role): <traceback>`` to stderr and abort every rank with exit code 1."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(f"rank {comm.Get_rank()} ({role}): {text}")
    sys.stderr.flush()
    # The launcher forwards our stderr through a pipe; aborting at once can kill the job before the
    # report is forwarded (seen with MPICH's hydra), so give it a moment first.
    time.sleep(ABORT_GRACE_SECONDS)
    comm.Abort(1)


def install_abort_hook(comm: Any, role: str) -> None:
    """Make any uncaught exception on this rank abort the whole job instead of leaving peers waiting."""
    def hook(exc_type, exc, tb):
        report_and_abort(comm, role, exc.with_traceback(tb))
    sys.excepthook = hook


class StopRequest:
    """Turns SIGTERM and SIGINT into a flag that the training loops check between steps, so a run
    stops at a clean point and writes a checkpoint. A second signal raises KeyboardInterrupt at
    once (for a run stuck inside an environment step)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
