"""Serve the site novelty model: how unlike a site's own benign traffic a window is.

The novelty model is the paper's Seq2Seq encoder-decoder trained as an autoencoder on one site's benign windows
(:mod:`tapwatch.models.training.novelty`). A window it reconstructs badly is unlike anything the site showed it,
whatever the attack classifier says; the reconstruction error divided by the site's threshold (a high quantile of
the error on held-out benign windows) is the window's novelty ratio, and a ratio ≥ 1 means "more unlike this
site than 99.9 % of its benign windows" at the default quantile.

Serving must score exactly as training did, so this module owns the two numpy functions both sides use:
:func:`prepare_windows` (clip every value to [-:data:`CLIP`, :data:`CLIP`] and zero the padded rows, before the
model sees the window) and :func:`reconstruction_errors` (the mean squared error over the valid rows and all
features). Zeroing the padded rows makes the error a function of the real flows alone: padding sits at the
front, where the encoder would otherwise read whatever it holds. Training imports both; this module imports
numpy, onnxruntime and :mod:`tapwatch.features` only, never TensorFlow or :mod:`tapwatch.models`.

>>> x = np.zeros((2, 3, 2), np.float32)
>>> x[:, 2] = 1.0  # the last row of each window is a real flow, the first two are padding
>>> recon = np.full_like(x, 0.5)
>>> reconstruction_errors(x, recon, np.array([1, 0])).tolist()  # (0.5² + 0.5²) / 2 on the one valid row
[0.25, 0.0]
>>> prepare_windows(np.array([[[99.0], [-99.0]]]), np.array([1]))[0, :, 0].tolist()
[0.0, -10.0]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tapwatch.features.errors import ModelCardError
from tapwatch.inference.model import open_session

INPUT_NAME = "windows"
OUTPUT_NAME = "recon"
CLIP = 10.0
"""Scaled features beyond ±10 are clipped: one extreme flow (a 10⁹-byte transfer) would otherwise dominate
every error and the training loss with it."""

BATCH = 4096
"""Windows per ORT run: bounds the memory of the LSTM's intermediates when a whole holdout set is scored."""

Windows = np.ndarray[Any, np.dtype[np.float32]]
ValidRows = np.ndarray[Any, np.dtype[np.integer[Any]]]
Errors = np.ndarray[Any, np.dtype[np.float64]]


def valid_mask(valid_rows: ValidRows, window_length: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """(N, T) True on the real rows: the last ``valid_rows[i]`` of window i (padding is at the front).

    >>> valid_mask(np.array([0, 2, 5]), 3).astype(int).tolist()
    [[0, 0, 0], [0, 1, 1], [1, 1, 1]]
    """
    v = np.asarray(valid_rows)
    mask: np.ndarray[Any, np.dtype[np.bool_]] = np.arange(window_length)[None, :] >= (window_length - v)[:, None]
    return mask


def _check(windows: np.ndarray[Any, Any], valid_rows: np.ndarray[Any, Any]) -> None:
    if windows.ndim != 3:
        raise ValueError(f"windows must be (N, T, F), got shape {windows.shape}")
    if valid_rows.shape != (len(windows),):
        raise ValueError(f"valid_rows must be ({len(windows)},), one count per window, got shape {valid_rows.shape}")
    if not np.issubdtype(valid_rows.dtype, np.integer):
        raise ValueError(f"valid_rows must be integers, got {valid_rows.dtype}")
    if len(valid_rows) and (valid_rows.min() < 0 or valid_rows.max() > windows.shape[1]):
        raise ValueError(f"valid_rows must be in [0, T={windows.shape[1]}], got {valid_rows.min()}..{valid_rows.max()}")


def prepare_windows(windows: np.ndarray[Any, Any], valid_rows: np.ndarray[Any, Any]) -> Windows:
    """The model input: float32 ``windows`` clipped to [-CLIP, CLIP], padded rows set to 0 (a new array)."""
    x = np.asarray(windows, dtype=np.float32)
    v = np.asarray(valid_rows)
    _check(x, v)
    out: Windows = np.clip(x, -CLIP, CLIP)
    out[~valid_mask(v, x.shape[1])] = 0.0
    return out


def reconstruction_errors(
    windows: np.ndarray[Any, Any], recon: np.ndarray[Any, Any], valid_rows: np.ndarray[Any, Any]
) -> Errors:
    """Per window, the mean of (window - recon)² over its valid rows and all features; 0.0 with no valid row.

    ``windows`` must be the model input (:func:`prepare_windows`), ``recon`` the model's output for it.
    """
    x = np.asarray(windows, dtype=np.float64)
    r = np.asarray(recon, dtype=np.float64)
    v = np.asarray(valid_rows)
    _check(x, v)
    if r.shape != x.shape:
        raise ValueError(f"recon has shape {r.shape}, the windows {x.shape}")
    mask = valid_mask(v, x.shape[1])
    sq = ((x - r) ** 2).sum(axis=2) * mask  # (N, T): squared error per row, 0 on padding
    denom = v.astype(np.float64) * x.shape[2]
    errors: Errors = np.divide(sq.sum(axis=1), denom, out=np.zeros(len(x)), where=denom > 0)
    return errors


class NoveltyScorer:
    """A site's novelty model in ONNX Runtime: reconstruction errors and novelty ratios of windows.

    Parameters
    ----------
    onnx
        The ONNX graph: one float input ``windows`` of shape [batch, T, F] and one float output ``recon`` of the
        same shape. Anything else raises :class:`~tapwatch.features.errors.ModelCardError`.
    threshold
        The site's error threshold (``NoveltyArtifact.threshold``), finite and > 0.
    threads
        ORT intra-op threads (:func:`~tapwatch.inference.model.open_session`).

    Example
    -------
    ``NoveltyScorer(artifact.onnx, artifact.threshold).ratios(windows, valid_rows)`` gives one ratio per window;
    ≥ 1.0 is novel for the site.
    """

    def __init__(self, onnx: bytes, threshold: float, threads: int = 1) -> None:
        if isinstance(threshold, bool) or not math.isfinite(threshold) or threshold <= 0:
            raise ModelCardError(f"novelty threshold must be a finite number > 0, got {threshold!r}")
        try:
            self._session = open_session(onnx, threads)
        except ValueError:
            raise  # a bad ``threads`` is the caller's mistake, not the model's
        except Exception as err:  # ORT raises its own exception types for a graph it cannot load
            raise ModelCardError(f"novelty model: ONNX Runtime cannot load it: {err}") from err
        self.window_length, self.features = _check_graph(self._session)
        self.threshold = float(threshold)

    def errors(self, windows: np.ndarray[Any, Any], valid_rows: np.ndarray[Any, Any]) -> Errors:
        """Reconstruction error per window, float64 (N,), computed exactly as in training."""
        x = prepare_windows(windows, valid_rows)
        if x.shape[1:] != (self.window_length, self.features):
            want = (self.window_length, self.features)
            raise ValueError(f"windows must be (N, T, F) with (T, F) = {want}, got shape {x.shape}")
        recon = [self._session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)]
        r = np.concatenate(recon) if recon else np.zeros_like(x)
        return reconstruction_errors(x, r, valid_rows)

    def ratios(self, windows: np.ndarray[Any, Any], valid_rows: np.ndarray[Any, Any]) -> Errors:
        """Errors divided by the threshold: ≥ 1.0 is more unlike the site than its threshold quantile."""
        return self.errors(windows, valid_rows) / self.threshold


def _check_graph(session: Any) -> tuple[int, int]:
    """(T, F) of a graph with exactly input ``windows`` and output ``recon``, both float [batch, T, F]."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ModelCardError(f"novelty model: inputs {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
    if [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ModelCardError(f"novelty model: outputs {[o.name for o in outputs]}, expected [{OUTPUT_NAME!r}]")
    shape_in = _dims(inputs[0].shape)
    t, f = shape_in[1:] if len(shape_in) == 3 and shape_in[0] is None else (None, None)
    if t is None or f is None:  # T and F must be fixed, the batch axis free
        raise ModelCardError(f"novelty model: input {INPUT_NAME!r} has shape {shape_in}, expected [None, T, F]")
    shape_out = _dims(outputs[0].shape)
    if shape_out != shape_in:
        raise ModelCardError(f"novelty model: output {OUTPUT_NAME!r} has shape {shape_out}, the input {shape_in}")
    for arg in (inputs[0], outputs[0]):
        if arg.type != "tensor(float)":
            raise ModelCardError(f"novelty model: {arg.name!r} is {arg.type}, expected tensor(float)")
    return t, f


def _dims(shape: list[Any]) -> list[int | None]:
    """ORT names free dimensions with strings (or None); map them to None."""
    return [d if isinstance(d, int) else None for d in shape]
