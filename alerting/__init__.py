"""tapwatch.alerting."""
