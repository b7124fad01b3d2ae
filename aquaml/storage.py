"""Writing files so that nothing a user saved is ever half-written."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary name keeps ``path``'s full suffix (Keras insists on ``.weights.h5``). If the
    body raises, the temporary file is removed and ``path`` is left as it was.
    """
    directory, base = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + base, dir=directory)
    os.close(fd)
    os.unlink(tmp)  # writers such as h5py want to create the file themselves
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def unique_run_dir(root: str, name: str) -> str:
    """``root/name``, or ``root/name-2``, ``-3``... if it already holds files (never overwrite a run)."""
    candidate, k = os.path.join(root, name), 1
    while os.path.isdir(candidate) and os.listdir(candidate):
        k += 1
        candidate = os.path.join(root, f"{name}-{k}")
    os.makedirs(candidate, exist_ok=True)
    return candidate


def replace_dir(tmp: str, final: str) -> None:
    """Move the finished directory ``tmp`` to ``final``, replacing a directory already there whole:
    a reader sees the old one or the new one, never a mix."""
    if os.path.exists(final):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(os.path.abspath(final)))
        os.replace(final, os.path.join(old, "previous"))
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def check_run_name(name: str) -> str:
    """``name`` if it is one plain directory name (what ``<run_root>/<name>`` may use); else ValueError.

    Refused: an empty name, ``.`` and ``..``, and anything holding a path separator or a NUL byte,
    because those point at (or above) the run root instead of at one run inside it.
    """
    separators = {"/", os.sep, os.altsep} - {None}
    if not isinstance(name, str) or name in ("", ".", "..") or "\0" in name or any(s in name for s in separators):
        raise ValueError(f"name must be one plain directory name (not empty, not '.' or '..', no "
                         f"{' or '.join(sorted(map(repr, separators)))}), got {name!r}")
    return name


def is_run_dir(path: str) -> bool:
    """True when ``path`` holds an aquaml run: a ``config.json`` naming its algorithm and parameters."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "algo" in config and "parameters" in config


def previous_attempt(run_dir: str) -> list[str]:
    """What ``set_aside_previous`` would move: the entries of ``run_dir`` other than ``previous-<k>``.

    Raises:
        ValueError: ``run_dir`` holds such entries but no aquaml run (``is_run_dir``): they are a
            user's files, and nothing may move them.
    """
    if not os.path.isdir(run_dir):
        return []
    leftovers = sorted(n for n in os.listdir(run_dir) if not n.startswith("previous-"))
    if leftovers and not is_run_dir(run_dir):
        raise ValueError(f"{run_dir} holds files but no aquaml run (no config.json of one), so a run cannot "
                         f"start there: choose another name or run_root ({len(leftovers)} entries found, "
                         f"e.g. {', '.join(leftovers[:3])})")
    return leftovers


def set_aside_previous(run_dir: str) -> tuple[str, list[str]] | None:
    """Before a run starts afresh in ``run_dir`` (a resume that found no checkpoint), move what an
    earlier attempt left there into ``run_dir/previous-<k>/`` rather than overwrite it.

    Returns ``(the previous-<k> directory, the names moved)``, or None when there was nothing.

    Raises:
        ValueError: ``run_dir`` holds files but no aquaml run (see ``previous_attempt``); nothing moves.
    """
    leftovers = previous_attempt(run_dir)
    if not leftovers:
        return None
    k = 1
    while os.path.exists(os.path.join(run_dir, f"previous-{k}")):
        k += 1
    target = os.path.join(run_dir, f"previous-{k}")
    os.makedirs(target)
    for name in leftovers:
        os.replace(os.path.join(run_dir, name), os.path.join(target, name))
    return target, leftovers


def file_sha256(path: str) -> str:
    """The SHA-256 of the file at ``path``, as hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
