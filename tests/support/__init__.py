"""Shared test kits, no tests: imported by the tests of every layer (tests/unit, redis, netns, corpus, e2e).

env (paths, prerequisites, a private Redis, free ports), tiny_model (a tiny real ONNX model and its card),
bus_contract and worker (suites every bus runs), alerting, cli, e2e, evaluation, scoring, pcapkit, rowkit.
"""
