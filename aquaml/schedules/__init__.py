"""Schedules: how acting, storing and learning interleave, independent of the algorithm."""
