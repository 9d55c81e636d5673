"""Tests against a real Redis server (a private one per test, started by the redis_server fixture)."""
