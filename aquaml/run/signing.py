"""Signatures that say "this user wrote these files": HMAC-SHA256 with a key only the user can read.

A checkpoint's environments are pickles and a policy export's SavedModel is a TensorFlow graph:
loading either can run any code. aquaml loads them only when the manifest listing them (with each
file's SHA-256) carries a signature made with the user's key, or when the user says they trust
the files. The key is 32 random bytes, hex-encoded, in ``$AQUAML_KEY_FILE``, by default
``$XDG_CONFIG_HOME/aquaml/checkpoint.key`` (``~/.config/aquaml/checkpoint.key``): outside every run
directory, created on first use with mode 0600 in a directory of mode 0700. A run copied from
someone else, or changed by anyone who can write the run directory but cannot read the key (a
group-writable scratch directory), does not verify.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from typing import Any, Mapping

#: The environment variable that names the key file (tests and shared accounts point it elsewhere).
KEY_ENV = "AQUAML_KEY_FILE"


class SigningKeyError(PermissionError):
    """The key file exists but cannot vouch for anything: not this user's, or readable by others."""


def key_path() -> str:
    """Where the user's signing key is (or will be created)."""
    if os.environ.get(KEY_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[KEY_ENV]))
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "aquaml", "checkpoint.key")


def _read_key(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SigningKeyError(f"{path}: the signing key must belong to you and be readable by you alone "
                                  f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}); anyone who can "
                                  f"read it can forge checkpoints you would load. Fix with: chmod 600 {path}, "
                                  f"or delete it to make a new one (your existing checkpoints then need "
                                  "--trust-checkpoint once)")
        text = os.read(fd, 256).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise SigningKeyError(f"{path}: not an aquaml signing key (expected 64 hex digits); delete it to make a new one")
    return key


def user_key(create: bool = True) -> bytes | None:
    """The user's key, made on first use when ``create`` (else None when there is none yet).

    Raises:
        SigningKeyError: the key file is not the user's alone, or not a key.
    """
    path = key_path()
    if os.path.exists(path) or not create:
        return _read_key(path) if os.path.exists(path) else None
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".checkpoint.key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def payload(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a manifest's signature covers: its canonical JSON without the ``signature`` entry."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True).encode("utf-8")


def sign(manifest: Mapping[str, Any]) -> str:
    """The hex HMAC-SHA256 of ``payload(manifest)`` with the user's key (made if needed)."""
    return hmac.new(user_key(create=True), payload(manifest), hashlib.sha256).hexdigest()


def signature_problem(manifest: Mapping[str, Any]) -> str | None:
    """None when ``manifest['signature']`` is the user's signature of it; else why it is not."""
    signature = manifest.get("signature")
    if not isinstance(signature, str):
        return "it carries no signature (written by an older aquaml, or by hand)"
    key = user_key(create=False)
    if key is None:
        return f"it is signed, but you have no signing key ({key_path()}) to check it with"
    want = hmac.new(key, payload(manifest), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        return (f"its signature does not match your key ({key_path()}): it was written by someone else or on "
                "another machine, or changed since")
    return None
