"""Tests on the ../shared corpus: datasets and pcaps."""
