"""Tests that need root: network namespaces, live capture, dropped privileges."""
