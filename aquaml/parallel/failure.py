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
    once (for a run stuck inside an environment step).

    ``request(reason)`` asks for the same clean stop without a signal (a task's ``on_evaluation``
    callback does, to end a pruned tuning trial). Stop requests nest: one made while another is
    installed (a task inside a tuning loop) starts requested when the outer one has already caught
    a signal, and passes each signal it catches on to the outer one, so that both stop; requests
    without a signal stay with the one they were made on.

    Attributes:
        requested: a stop was asked for.
        reason: why: the first signal's name (``'SIGTERM'``) or the reason given to ``request``.
        signal_name: the signal that asked for the stop, None when none did.
    """

    def __init__(self) -> None:
        self.requested = False
        self.reason: str | None = None
        self.signal_name: str | None = None
        self._outer: StopRequest | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
            owner = getattr(self._previous[sig], "__self__", None)
            if isinstance(owner, StopRequest):
                self._outer = owner
        if self._outer is not None and self._outer.signal_name is not None:
            self._note_signal(self._outer.signal_name)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            raise KeyboardInterrupt(f"second {name}")
        self._note_signal(name)

    def _note_signal(self, name: str) -> None:
        self.signal_name = name
        self.request(name)
        if self._outer is not None and self._outer.signal_name is None:
            self._outer._note_signal(name)

    def request(self, reason: str) -> None:
        """Ask the loops to stop at their next clean point (the first reason given is kept)."""
        self.requested = True
        if self.reason is None:
            self.reason = reason

    def restore(self) -> None:
        """Put back the handlers that were installed before this one."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
