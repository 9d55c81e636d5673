"""tapwatch.models.evaluation: ``evaluate``, its metrics and reports, the feature-subset report and the cost table."""
