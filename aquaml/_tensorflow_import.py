"""The first import of TensorFlow, without the two notes its C++ start-up writes to stderr.

Importing TensorFlow 2.21 prints, twice each and on every MPI rank, absl's "All log messages before
absl::InitializeLog() is called are written to STDERR" and the oneDNN note ("oneDNN custom
operations are on..."), before any Python code could silence them: ``TF_CPP_MIN_LOG_LEVEL`` does
not reach absl's early log, and the oneDNN note goes only when ``TF_ENABLE_ONEDNN_OPTS=0``, which
would change the numerics. So the import runs with the stderr file descriptor captured, and
every other line it wrote is written back, in order, when it ends (also when it fails).
``install()`` arranges that for the first ``import tensorflow`` of the process, wherever it comes
from; ``AQUAML_TF_NOTES=1`` leaves the notes in.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
from typing import Iterator

#: Substrings of the start-up lines left out; nothing else is.
NOTES = ("All log messages before absl::InitializeLog() is called are written to STDERR",
         "oneDNN custom operations are on")


@contextlib.contextmanager
def _without_notes() -> Iterator[None]:
    """Capture file descriptor 2 for the body; write back every line but ``NOTES`` after it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        capture = tempfile.TemporaryFile()
    except OSError:  # no usable stderr: nothing to keep clean
        yield
        return
    os.dup2(capture.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        kept = [line for line in capture.read().splitlines(keepends=True)
                if not any(note.encode() in line for note in NOTES)]
        capture.close()
        if kept:
            os.write(2, b"".join(kept))


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run inside ``_without_notes``."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with _without_notes():
            self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader  # nothing later sees this wrapper


class _FirstTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, as the other finders do, and hands it a ``_QuietLoader``."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Make the process's first ``import tensorflow`` leave out ``NOTES`` (once; no-op after it)."""
    if "tensorflow" in sys.modules or os.environ.get("AQUAML_TF_NOTES") == "1":
        return
    if not any(isinstance(f, _FirstTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _FirstTensorFlowImport())
