"""tapwatch.features: the feature contract, records, windows, model cards and the bus.

Every other stage imports its contracts from here and from nowhere else: the ordered CIC-IDS2017 feature
list (:mod:`tapwatch.features.contract`), the records between stages (:mod:`tapwatch.features.schema`),
per-key windows (:mod:`tapwatch.features.window`), model cards (:mod:`tapwatch.features.card`) and the
bus that carries windows (:mod:`tapwatch.features.bus`).
"""
