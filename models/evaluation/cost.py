"""Inference cost of the models: parameters, ONNX bytes, multiply-adds per window and windows/s per core.

Throughput is measured in ONNX Runtime on the CPU with one intra-op and one inter-op thread, sequential
execution, on random windows (the cost does not depend on the weights), as the best of a few timed runs
(the host is shared, so the best run is the least disturbed one). Multiply-adds are counted analytically per
Keras layer (:func:`layer_macs`): matrix products and convolutions only, the recurrences for all T steps;
activations, normalisation and pooling are left out (they are O(outputs), not O(weights × outputs)).

Run ``python -m tapwatch.models.evaluation.cost`` for the table of the presets and ``--levers`` for the Hybrid's speed
levers (projection, filters, unrolling, ORT graph optimisation, dynamic int8 quantisation).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tapwatch.inference.model import open_session
from tapwatch.models.training.arch import INPUT_NAME, OUTPUT_NAME, PRESETS, HybridParams, Params, build, preset

BATCHES = (1, 256)
DEFAULT_MODELS = ("hybrid-full", "hybrid-fast", "seq2seq", "lunet", "mlp")


@dataclass(frozen=True)
class CostRow:
    """One model's cost at one window shape.

    Parameters
    ----------
    model
        Preset or variant label.
    params
        Keras parameters (trainable and not).
    onnx_bytes
        Size of the exported ``.onnx``.
    macs_per_window
        Multiply-adds per window (:func:`count_macs`).
    windows_per_s
        Windows per second per core, by batch size.
    note
        How it was run (graph optimisation, quantisation, unrolling).
    """

    model: str
    params: int
    onnx_bytes: int
    macs_per_window: int
    windows_per_s: dict[int, float]
    note: str = ""


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape[1:])


def layer_macs(layer: Any) -> int:
    """Multiply-adds one window costs in ``layer`` (0 for layers without weights to multiply)."""
    kind = type(layer).__name__
    if kind not in ("Dense", "Conv1D", "LSTM", "ConvLSTM1D"):
        return 0
    inputs = layer.input if isinstance(layer.input, list | tuple) else [layer.input]
    shape = _shape(inputs[0])  # an RNN's further inputs are its initial state
    if kind == "Dense":
        return math.prod(shape[:-1]) * shape[-1] * int(layer.units)
    if kind == "Conv1D":
        out_len = _shape(layer.output)[0]
        return out_len * int(layer.kernel_size[0]) * shape[-1] * int(layer.filters)
    if kind == "LSTM":
        steps, n_in = shape
        return steps * 4 * int(layer.units) * (n_in + int(layer.units))
    steps, rows, channels = shape  # ConvLSTM1D over (T, rows, channels); 'same' padding keeps the rows
    filters, k = int(layer.filters), int(layer.kernel_size[0])
    return steps * rows * 4 * filters * k * (channels + filters)


def count_macs(model: Any) -> int:
    """Multiply-adds per window of a Keras model (sum of :func:`layer_macs`)."""
    return sum(layer_macs(layer) for layer in model.layers)


def throughput(session: Any, batch: int, shape: tuple[int, int], seconds: float = 1.0, repeats: int = 3) -> float:
    """Best windows/s over ``repeats`` runs of about ``seconds`` each, feeding batches of ``batch`` windows."""
    x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)
    session.run([OUTPUT_NAME], {INPUT_NAME: x})  # warm-up: ORT allocates on the first run
    best = 0.0
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            session.run([OUTPUT_NAME], {INPUT_NAME: x})
            n += batch
        best = max(best, n / elapsed)
    return best


def measure(label: str, model: Any, onnx_path: Path, optimization: str = "all", seconds: float = 1.0) -> CostRow:
    """The cost row of an exported model (ORT, 1 thread, graph optimisation ``optimization``)."""
    session = open_session(onnx_path, 1, optimization)
    _, t, f = model.input_shape
    return CostRow(
        model=label,
        params=int(model.count_params()),
        onnx_bytes=onnx_path.stat().st_size,
        macs_per_window=count_macs(model),
        windows_per_s={b: round(throughput(session, b, (t, f), seconds), 1) for b in BATCHES},
        note=f"opt={optimization}",
    )


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of the MatMul/Gemm weights (ORT's ``quantize_dynamic``)."""
    # ORT's offline quantiser rewrites a file and runs no model, so it stays here rather than in inference/'s
    # loader: it needs the onnx package, which the training extras install and serving does not.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    return dst


def cost_row(label: str, params: Params, workdir: Path, optimization: str = "all", seconds: float = 1.0) -> CostRow:
    """Build ``params`` (untrained weights), export it to ``workdir`` and measure it."""
    from tapwatch.models.training.export import export_onnx

    model = build(params)
    path = workdir / f"{label.replace(' ', '_')}.onnx"
    export_onnx(model, path)
    row = measure(label, model, path, optimization, seconds)
    return replace(row, note=f"{row.note}, unroll={getattr(params, 'unroll', '-')}")


def cost_table(names: Sequence[str], shape: tuple[int, int, int], workdir: Path, seconds: float = 1.0) -> list[CostRow]:
    """One row per preset at ``shape`` = (T, F, n_classes)."""
    t, f, c = shape
    return [cost_row(name, preset(name, t, f, c), workdir, seconds=seconds) for name in names]


def lever_table(shape: tuple[int, int, int], workdir: Path, seconds: float = 1.0) -> list[CostRow]:
    """What each speed lever gives the Hybrid, from the full reconstruction to ``hybrid-fast``."""
    t, f, c = shape
    full, fast = preset("hybrid-full", t, f, c), preset("hybrid-fast", t, f, c)
    assert isinstance(full, HybridParams) and isinstance(fast, HybridParams)
    variants: list[tuple[str, Params, str]] = [
        ("hybrid-full", full, "all"),
        ("hybrid-full opt=disable", full, "disable"),
        ("hybrid-full unrolled", replace(full, unroll=True), "all"),
        ("hybrid-full + projection 8", replace(full, projection=8), "all"),
        ("hybrid-full filters 8/8/8", replace(full, filters=(8, 8, 8)), "all"),
        ("hybrid-fast as a loop (not unrolled)", replace(fast, unroll=False), "all"),
        ("hybrid-fast with projection 16", replace(fast, projection=16), "all"),
        ("hybrid-fast with filters 16/16/16", replace(fast, filters=(16, 16, 16)), "all"),
        ("hybrid-fast", fast, "all"),
        ("hybrid-fast opt=basic", fast, "basic"),
        ("hybrid-fast opt=disable", fast, "disable"),
    ]
    rows = [cost_row(label, p, workdir, opt, seconds) for label, p, opt in variants]
    quantized = quantize_int8(workdir / "hybrid-fast.onnx", workdir / "hybrid-fast-int8.onnx")
    row = measure("hybrid-fast int8 (dynamic)", build(fast), quantized, "all", seconds)
    return [*rows, replace(row, note=f"{row.note}, quantize_dynamic QInt8")]


def to_markdown(rows: Sequence[CostRow]) -> str:
    """The rows as a Markdown table."""
    head = "| model | params | ONNX bytes | MACs/window | windows/s/core b=1 | windows/s/core b=256 | run |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        wps = [f"{r.windows_per_s.get(b, float('nan')):,.0f}" for b in BATCHES]
        lines.append(
            f"| {r.model} | {r.params:,} | {r.onnx_bytes:,} | {r.macs_per_window:,} | {wps[0]} | {wps[1]} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tapwatch.models.evaluation.cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--window-length", type=int, default=10, help="T (default 10)")
    parser.add_argument("--features", type=int, default=82, help="F (default 82, the CIC feature set)")
    parser.add_argument("--classes", type=int, default=2, help="number of classes (default 2)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(PRESETS))
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each timed run (best of 3)")
    parser.add_argument("--levers", action="store_true", help="also measure the Hybrid's speed levers")
    parser.add_argument("--out", type=Path, help="also write the tables (Markdown) to this file")
    args = parser.parse_args(argv)
    shape = (args.window_length, args.features, args.classes)
    parts = [f"T={shape[0]} F={shape[1]} classes={shape[2]}; ONNX Runtime CPU, 1 thread, best of 3 runs", ""]
    with tempfile.TemporaryDirectory(prefix="tapwatch-cost-") as tmp:
        parts.append(to_markdown(cost_table(args.models, shape, Path(tmp), args.seconds)))
        if args.levers:
            parts += ["", "Speed levers of the Hybrid", "", to_markdown(lever_table(shape, Path(tmp), args.seconds))]
    text = "\n".join(parts) + "\n"
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
