"""Acting: the worker that steps environments into a buffer, and the host policy that acts in numpy."""
