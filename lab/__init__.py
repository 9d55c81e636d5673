"""lab: the network-namespace lab (traffic generation with real tools, the live check, extractor comparisons).

Run from the repository root (``python -m lab.traffic``, ``python -m lab.live_check``); not installed with the
wheel. It may import any room of tapwatch; only ``tests/`` and ``bench/`` import it.
"""
