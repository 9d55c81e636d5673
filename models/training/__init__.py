"""tapwatch.models.training: dataset loaders, window sequences, architectures, ``train`` and ``export``."""
