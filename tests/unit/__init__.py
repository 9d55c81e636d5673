"""Unit tests: no Redis server, no root, no ../shared."""
