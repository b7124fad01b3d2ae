"""Process-level concerns: threads and devices per rank (the MPI runtime builds on these)."""
