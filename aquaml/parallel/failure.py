"""No rank hangs for a dead peer: an exception anywhere aborts the job; signals stop it cleanly.

Signals have three phases. From ``import aquaml`` until a run starts, ``DEFERRED`` holds a SIGTERM or
SIGINT (a job pre-empted while TensorFlow still imports must not die with signal 15, nor leave
MPICH's shared-memory files behind); the starter takes it and stops before training. During a run,
``StopRequest`` turns them into a flag the loops check. A second signal acts at once.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

#: Seconds between printing a rank's traceback and aborting the job.
ABORT_GRACE_SECONDS = 1.0
#: Seconds a signal that arrived before any run started is held for a run to take it; after that
#: it acts as it would have without aquaml, so a script that never starts a run still stops.
DEFER_SECONDS = 60.0
#: Exit code of every rank when a task is refused before it starts (as for a bad command line).
STARTUP_EXIT_CODE = 2

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StartupError(RuntimeError):
    """Another rank refused the task before it started (its message says which rank and why)."""


def report_and_abort(comm: Any, role: str, exc: BaseException) -> None:
    """Print ``rank N (role): <traceback>`` to stderr and abort every rank with exit code 1.

    An error every rank agreed on before the task started (see ``agree_to_start``) ends every rank
    with exit code 2 instead, its message printed once, by the rank it came from.
    """
    if hasattr(exc, "aquaml_startup"):
        exit_startup(exc)
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(f"rank {comm.Get_rank()} ({role}): {text}")
    sys.stderr.flush()
    # The launcher forwards our stderr through a pipe; aborting at once can kill the job before the
    # report is forwarded (seen with MPICH's hydra), so give it a moment first.
    time.sleep(ABORT_GRACE_SECONDS)
    comm.Abort(1)


def mark_startup_error(exc: BaseException, prints: bool) -> BaseException:
    """Flag ``exc`` as refusing the task before it started; ``prints``: this rank prints its message."""
    exc.aquaml_startup = prints
    return exc


def exit_startup(exc: BaseException) -> None:
    """End this rank of a task refused before it started: the rank that found the problem prints
    its message once (no traceback: the message says what to change), every rank finalises MPI if
    it started it and exits with ``STARTUP_EXIT_CODE``."""
    if exc.aquaml_startup:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
    mpi_module = sys.modules.get("mpi4py.MPI")
    if mpi_module is not None and mpi_module.Is_initialized() and not mpi_module.Is_finalized():
        mpi_module.Finalize()  # every rank got here together, so this completes
    os._exit(STARTUP_EXIT_CODE)


def install_startup_hook() -> None:
    """Before the task's communicator exists: an uncaught startup error ends this rank with exit
    code 2, printed by one rank only (see ``mark_startup_error``); anything else as usual."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if hasattr(exc, "aquaml_startup"):
            exit_startup(exc)
        previous(exc_type, exc, tb)
    sys.excepthook = hook


def agree_to_start(comm: Any, error: BaseException | None, held_signal: str | None) -> str | None:
    """The collective check every rank of a task passes before the task's collective start-up
    (shared windows, restore messages): one rank that cannot start must not leave the others
    waiting in a collective forever.

    Returns None when every rank may start, or the name of a signal some rank received while
    starting (every rank then stops before training). Raises on every rank when any rank failed:
    the failing rank with the lowest number re-raises its own ``error``, the others raise
    ``StartupError`` naming it; both are marked (``mark_startup_error``) so that an uncaught one
    ends every rank with exit code 2 and one printed message (``report_and_abort``).
    """
    import numpy as np

    from aquaml.parallel.mpi import mpi, sleepy_wait
    MPI = mpi()
    rank, size = comm.Get_rank(), comm.Get_size()
    mine = np.array([rank if error is not None else size, 0 if held_signal is None else 1], np.int64)
    # one reduction: MIN over the failing rank, MIN over "no signal" (0 when nobody holds one)
    flags = np.array([mine[0], 1 - mine[1]], np.int64)
    out = np.empty(2, np.int64)
    sleepy_wait(comm.Iallreduce(flags, out, op=MPI.MIN))
    first_failing, nobody_signalled = int(out[0]), bool(out[1])
    if first_failing == size:
        return None if nobody_signalled else (held_signal or "a signal on another rank")
    text = f"{type(error).__name__}: {error}" if rank == first_failing else ""
    length = np.array([len(text.encode())], np.int64)
    sleepy_wait(comm.Ibcast(length, root=first_failing))
    message = np.frombuffer(text.encode(), np.uint8).copy() if rank == first_failing \
        else np.empty(int(length[0]), np.uint8)
    sleepy_wait(comm.Ibcast(message, root=first_failing))
    if rank == first_failing:
        raise mark_startup_error(error, prints=True)
    raise mark_startup_error(StartupError(f"rank {first_failing} refused the task: {message.tobytes().decode()}"),
                             prints=False)


def install_abort_hook(comm: Any, role: str) -> None:
    """Make any uncaught exception on this rank abort the whole job instead of leaving peers waiting."""
    def hook(exc_type, exc, tb):
        report_and_abort(comm, role, exc.with_traceback(tb))
    sys.excepthook = hook


def _interactive() -> bool:
    return bool(hasattr(sys, "ps1") or sys.flags.interactive or "IPython" in sys.modules)


class DeferredSignals:
    """Holds SIGTERM/SIGINT from ``import aquaml`` until a run takes them (``take``).

    Not installed in interactive sessions (an interpreter prompt, IPython, Jupyter) or when
    ``AQUAML_DEFER_SIGNALS=0``. A held signal that no run takes within ``DEFER_SECONDS`` is
    re-delivered with the handler that was there before; a second signal acts at once.
    """

    def __init__(self) -> None:
        self.pending: str | None = None
        self._originals: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @property
    def installed(self) -> bool:
        return bool(self._originals)

    def install(self) -> None:
        if self.installed or _interactive() or os.environ.get("AQUAML_DEFER_SIGNALS", "1") == "0":
            return
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread
        for sig in _SIGNALS:
            if signal.getsignal(sig) not in (signal.SIG_DFL, signal.default_int_handler):
                continue  # the program set its own handler: leave it alone
            self._originals[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        with self._lock:
            if self.pending is None:
                self.pending = signal.Signals(signum).name
                self._timer = threading.Timer(DEFER_SECONDS, self._redeliver, (signum,))
                self._timer.daemon = True
                self._timer.start()
                return
        self._act_now(signum)

    def _redeliver(self, signum: int) -> None:
        with self._lock:
            if self.pending is None:
                return
            self.pending = None
        self._act_now(signum)

    def _act_now(self, signum: int) -> None:
        """What the signal would have done without aquaml."""
        for sig, original in self._originals.items():
            signal.signal(sig, original)
        self._originals.clear()
        if threading.current_thread() is threading.main_thread() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)

    def take(self) -> str | None:
        """The name of the held signal (None if none arrived); a run now answers for it."""
        with self._lock:
            pending, self.pending = self.pending, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        return pending


#: The process's holder of early signals (installed by ``import aquaml``).
DEFERRED = DeferredSignals()


class StopRequest:
    """Turns SIGTERM and SIGINT into a flag that the training loops check between steps, so a run
    stops at a clean point and writes a checkpoint. A second signal raises KeyboardInterrupt at
    once (for a run stuck inside an environment step). A signal held since start-up (``DEFERRED``)
    counts as the first one.

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
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
            owner = getattr(self._previous[sig], "__self__", None)
            if isinstance(owner, StopRequest):
                self._outer = owner
        if self._outer is not None and self._outer.signal_name is not None:
            self._note_signal(self._outer.signal_name)
        held = DEFERRED.take()
        if held is not None:
            self._note_signal(held)

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
