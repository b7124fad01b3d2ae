"""Models: the RLBaseModel contract and its start-up check, default networks, distributions,
recurrent-state helpers and observation normalisation."""
