"""Shared test kits: a tiny real ONNX model with its card, free ports, pcaps and dataset rows."""
