"""tapwatch.features: the feature contract, records, windows, model cards, and the plumbing of every process.

Every other stage imports its contracts from here and from nowhere else: the ordered CIC-IDS2017 feature
list (:mod:`tapwatch.features.contract`), the records between stages (:mod:`tapwatch.features.schema`),
per-key windows (:mod:`tapwatch.features.window`), model cards (:mod:`tapwatch.features.card`) and the root of
the error hierarchy (:mod:`tapwatch.features.errors`). It also holds the small plumbing every process uses: the
health and metrics HTTP server (:mod:`tapwatch.features.health`) and the command-line error guard
(:mod:`tapwatch.features.cli`). The ground floor: it imports no other room of tapwatch.
"""
