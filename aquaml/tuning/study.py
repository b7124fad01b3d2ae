"""The Optuna side of a study: storage, heartbeat, sampler, pruner, and claiming the next trial.

Storage is a journal file (Optuna's ``JournalStorage`` on a ``JournalFileBackend``: appends under a
lock file, safe on a shared cluster filesystem, no server) or any Optuna storage URL. A running
trial's group leader writes a heartbeat every ``heartbeat_interval`` seconds; a trial whose
heartbeat is older than ``grace_period`` (its job was killed) is failed and queued again by Optuna's
``fail_stale_trials`` and retry callback, up to ``max_retries`` times. Trials are claimed under a
lock beside the storage, so that however many groups and jobs share a study, no more trials run
than are still needed: the study ends with exactly ``n_trials`` trials completed or pruned.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import warnings
from typing import Any, Iterator

import optuna
from optuna.storages import JournalStorage, RDBStorage, fail_stale_trials
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

#: The system attribute holding a journal trial's last heartbeat (seconds since the epoch).
HEARTBEAT_KEY = "aquaml:heartbeat"
#: The study user attribute that records what the study tunes, to refuse a different command.
SIGNATURE_KEY = "aquaml"
#: Seconds after which a claim lock left by a killed process is broken.
CLAIM_LOCK_GRACE = 30
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def retry_callback(max_retries: int) -> Any:
    """Optuna's callback that queues a failed trial again (same parameters, its intermediate values
    kept) up to ``max_retries`` times; named RetryFailedTrialCallback before Optuna 4.9."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=max_retries, inherit_intermediate_values=True)


def retried_trial(trial: Any) -> int | None:
    """The number of the first trial that ``trial`` retries, None when it is not a retry."""
    return trial.system_attrs.get("failed_trial")


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with Optuna's heartbeat interface (which only its RDB storage has):
    heartbeats are system attributes of the trial in the journal, so ``fail_stale_trials`` finds
    the trials of a killed job from any other process that reads the file.

    Heartbeats are wall-clock times written by one host and read by others: hosts' clocks must
    agree to well within ``grace_period`` (NTP does).
    """

    def __init__(self, backend: Any, heartbeat_interval: int, grace_period: int, stale_callback: Any) -> None:
        super().__init__(backend)
        self._heartbeat_interval, self._grace_period = heartbeat_interval, grace_period
        self._stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_KEY)
            if beat is None and trial.datetime_start is not None:
                beat = trial.datetime_start.timestamp()
            if beat is not None and now - beat > self._grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self._stale_callback


def is_url(storage: str) -> bool:
    return "://" in storage


def open_storage(storage: str, heartbeat_interval: int, grace_period: int, max_retries: int) -> Any:
    """The Optuna storage ``storage`` names: a journal file path, or a database URL (with a warning
    for SQLite on a network filesystem, where its locking breaks).

    Raises:
        ValueError: a journal file in a directory that does not exist.
    """
    callback = retry_callback(max_retries)
    if is_url(storage):
        if storage.startswith("sqlite:"):
            _warn_sqlite_on_network_fs(storage)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                              heartbeat_stale_trial_callback=callback)
    folder = os.path.dirname(os.path.abspath(storage))
    if not os.path.isdir(folder):
        raise ValueError(f"--storage {storage}: directory {folder} does not exist")
    backend = JournalFileBackend(storage, lock_obj=JournalFileSymlinkLock(storage))
    return HeartbeatJournalStorage(backend, heartbeat_interval, grace_period, callback)


def _warn_sqlite_on_network_fs(url: str) -> None:
    path = url.split(":///", 1)[-1]
    fs = _filesystem_type(os.path.dirname(os.path.abspath(path)) or ".")
    if fs.startswith(("nfs", "lustre", "gpfs", "beegfs", "cifs", "smb")):
        warnings.warn(f"--storage {url}: SQLite on a network filesystem ({fs}) breaks under concurrent writers "
                      f"(its fcntl locks are unreliable there); use a journal file (--storage path/study.log) "
                      f"or a database server URL", stacklevel=3)


def _filesystem_type(path: str) -> str:
    """The filesystem type of the mount holding ``path`` (from /proc/mounts), '' when unknown."""
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return ""
    path, best, kind = os.path.realpath(path), "", ""
    for fields in mounts:
        if len(fields) > 2 and (path == fields[1] or path.startswith(fields[1].rstrip("/") + "/")) \
                and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind


def make_sampler(name: Any, seed: int, startup_trials: int) -> Any:
    """Optuna's TPE (``constant_liar``: running trials count as pending, so parallel groups spread
    out) or random sampler, seeded; a sampler object is used as it is."""
    if not isinstance(name, str):
        return name
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=startup_trials)


def make_pruner(name: Any, startup_trials: int, warmup_steps: int) -> Any:
    """Optuna's median or successive-halving pruner, or none; a pruner object is used as it is."""
    if not isinstance(name, str):
        return name
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def finished_count(trials: list) -> int:
    """Trials that count towards ``n_trials``: completed or pruned."""
    return sum(1 for t in trials if t.state in FINISHED)


class ClaimLock:
    """An exclusive lock (a symlink, as the journal's own lock: it works on NFS) held while a
    leader counts the study's trials and asks for the next one."""

    def __init__(self, path: str) -> None:
        self._lock = JournalFileSymlinkLock(path, grace_period=CLAIM_LOCK_GRACE)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()


def claim_lock_path(storage: str, study_dir: str) -> str:
    """Where the claim lock lives: beside the journal file, or in the study's run directory."""
    return os.path.join(study_dir, "claims") if is_url(storage) else storage + ".claims"


def check_signature(study: Any, signature: dict[str, Any], storage: str) -> None:
    """Record what the study tunes on its first start; refuse a later command that tunes something else.

    Raises:
        ValueError: the study was created for another environment, algorithm, budget or space.
    """
    signature = json.loads(json.dumps(signature))
    saved = study.user_attrs.get(SIGNATURE_KEY)
    if saved is None:
        study.set_user_attr(SIGNATURE_KEY, signature)
        return
    differs = [f"{k}: study {saved.get(k)!r}, now {signature.get(k)!r}" for k in sorted(set(saved) | set(signature))
               if saved.get(k) != signature.get(k)]
    if differs:
        raise ValueError(f"study {study.study_name!r} in {storage} was started with other settings; continue it "
                         f"with the same command, or give another --study name:\n  " + "\n  ".join(differs))


class Heartbeat:
    """A thread that records a running trial's heartbeat every ``interval`` seconds until stopped."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # noqa: BLE001  (a storage hiccup must not end the trial; the next beat retries)
                warnings.warn(f"heartbeat of trial id {self._trial_id} not recorded: {exc}", stacklevel=1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale(study: Any) -> None:
    """Fail the trials of killed jobs (heartbeat older than the grace period) and queue their retries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)
