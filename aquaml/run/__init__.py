"""Running a task: the starter, progress and logging, checkpoints and policy export."""
