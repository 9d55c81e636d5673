"""tapwatch.inference."""
