"""End to end: whole pipelines over several stages, run as processes."""
