"""Buffers over pluggable array stores (local numpy arrays, or shared memory under MPI)."""
from aquaml.buffers.replay import LocalArrayStore, ReplayBuffer

__all__ = ["LocalArrayStore", "ReplayBuffer"]
