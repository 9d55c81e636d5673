"""tapwatch.models.scoring: ``tapwatch score``, shipped models applied to a flows CSV."""
