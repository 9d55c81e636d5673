"""tapwatch.models: training, evaluation and reports for the detection models."""
