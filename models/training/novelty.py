"""Train a site's novelty model: the paper's Seq2Seq encoder-decoder as an autoencoder of its benign windows.

The attack classifier only knows the attacks it was trained on. The novelty model knows one site instead: an
LSTM encoder reads a benign window into ``units`` numbers, an LSTM decoder rebuilds the window from them, and a
window the site never showed anything like comes back with a large reconstruction error. Its threshold is the
``quantile`` (0.999) of the error on benign windows held out of training, so that serving divides by it and reads
≥ 1 as "more unlike this site than 99.9 % of its benign windows"
(:class:`tapwatch.inference.novelty.NoveltyScorer`).

Serving equals training because both call the same numpy functions of :mod:`tapwatch.inference.novelty`:
:func:`~tapwatch.inference.novelty.prepare_windows` clips every value to [-10, 10] and zeroes the padded rows
BEFORE the model (the graph itself does not clip), and
:func:`~tapwatch.inference.novelty.reconstruction_errors` scores the valid rows only. Training masks the padded
rows too: the loss weighs each row by whether it is a real flow (a (N, T) sample weight), so the decoder spends
nothing on reproducing padding. Windows without a real flow are dropped before anything else.

The graph is exported in memory with ``tf2onnx.convert.from_function`` at opset 17 (as
:mod:`tapwatch.models.training.export` does): input ``windows`` [None, T, F], output ``recon`` [None, T, F], two
fused ONNX ``LSTM`` ops; it is checked with ``onnx.checker``, against Keras on a few held-out windows, and by
loading it into the serving class. TensorFlow is imported inside the functions (the ``train`` extra).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tapwatch.features.errors import ModelCardError
from tapwatch.inference.model import open_session
from tapwatch.inference.novelty import (
    INPUT_NAME,
    OUTPUT_NAME,
    NoveltyScorer,
    prepare_windows,
    reconstruction_errors,
    valid_mask,
)
from tapwatch.models.training.export import DEFAULT_OPSET, PARITY_ATOL, ExportError, convert

if TYPE_CHECKING:
    import keras

MIN_WINDOWS = 50
"""Fewer benign windows cannot give both a model and a held-out quantile worth a threshold."""

PARITY_WINDOWS = 256
QUANTILES = {"q50": 0.5, "q90": 0.9, "q99": 0.99, "q999": 0.999}
THRESHOLD_FLOOR = 1e-12
"""The threshold divides every error at serving time; a (theoretical) perfect reconstruction must not make it 0."""

Indices = np.ndarray[Any, np.dtype[np.intp]]


@dataclass(frozen=True)
class NoveltyConfig:
    """Hyperparameters of a site's novelty model.

    Parameters
    ----------
    units
        LSTM units of the encoder and of the decoder (the size of the window's code).
    epochs, batch_size, learning_rate
        Adam on the masked mean squared error.
    seed
        Seed of TensorFlow, NumPy, the subsample and the holdout split.
    max_windows
        At most this many windows are used (a seeded random subsample), holdout included.
    holdout
        Share of the windows kept out of training to set the threshold.
    quantile
        The threshold is this quantile of the reconstruction error on the held-out windows.

    Example
    -------
    >>> NoveltyConfig(epochs=2).quantile
    0.999
    """

    units: int = 32
    epochs: int = 4
    batch_size: int = 256
    seed: int = 0
    max_windows: int = 60_000
    holdout: float = 0.2
    quantile: float = 0.999
    learning_rate: float = 3e-3

    def __post_init__(self) -> None:
        for name in ("units", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_windows < MIN_WINDOWS:
            raise ValueError(f"max_windows must be >= {MIN_WINDOWS}, got {self.max_windows}")
        for name in ("holdout", "quantile"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclass(frozen=True)
class NoveltyArtifact:
    """A trained, exported and checked novelty model, ready for :class:`~tapwatch.inference.novelty.NoveltyScorer`.

    Parameters
    ----------
    onnx, sha256
        The ONNX graph (input ``windows``, output ``recon``) and the sha256 of these bytes.
    threshold
        The ``quantile`` of the held-out reconstruction errors (> 0).
    error_quantiles
        q50, q90, q99 and q999 of the held-out errors.
    windows, holdout_windows
        Windows the model was trained on, and windows held out for the threshold.
    seconds
        Wall time of :func:`train_novelty`: fit, held-out scoring, export and checks.
    window_length, features
        T and F.
    """

    onnx: bytes = field(repr=False)
    sha256: str
    threshold: float
    error_quantiles: dict[str, float]
    windows: int
    holdout_windows: int
    seconds: float
    window_length: int
    features: int


def build_autoencoder(t: int, f: int, units: int) -> keras.Model:
    """The Seq2Seq autoencoder: LSTM encoder → RepeatVector(T) → LSTM decoder → Dense(F) at every step.

    The Dense on the decoder's (T, units) sequence is TimeDistributed(Dense(F)) (Keras applies it to the last
    axis at every step) in one ONNX ``MatMul`` instead of T sliced ones. The Reshape to (T, F) changes no value:
    without it tf2onnx loses T in the output's static shape ([None, None, F]), which the scorer refuses. No
    dropout: the model must reproduce benign windows as well as it can.
    """
    import keras
    from keras import layers

    inp = keras.Input(shape=(t, f), dtype="float32", name=INPUT_NAME)
    code = layers.LSTM(units, name="encoder")(inp)
    x = layers.RepeatVector(t, name="repeat")(code)
    x = layers.LSTM(units, return_sequences=True, name="decoder")(x)
    x = layers.Dense(f, name="per_step_dense")(x)
    return keras.Model(inp, layers.Reshape((t, f), name="reconstruction")(x), name="novelty")


def split_indices(valid_rows: np.ndarray[Any, Any], cfg: NoveltyConfig) -> tuple[Indices, Indices]:
    """Sorted indices of the training and the held-out windows: windows with a real flow, at most
    ``cfg.max_windows`` of them (seeded), ``cfg.holdout`` of those held out (at least one on each side).

    >>> train, hold = split_indices(np.array([0] + [3] * 99), NoveltyConfig())
    >>> len(train), len(hold), 0 in train or 0 in hold
    (79, 20, False)
    """
    rng = np.random.default_rng(cfg.seed)
    usable = np.flatnonzero(np.asarray(valid_rows) > 0)
    if len(usable) > cfg.max_windows:
        usable = rng.choice(usable, cfg.max_windows, replace=False)
    usable = rng.permutation(usable)
    n_hold = min(max(1, round(len(usable) * cfg.holdout)), len(usable) - 1)
    return np.sort(usable[n_hold:]), np.sort(usable[:n_hold])


def _fit(model: Any, x: np.ndarray[Any, Any], valid_rows: np.ndarray[Any, Any], cfg: NoveltyConfig) -> None:
    import keras

    # A (N, T) sample weight weighs the per-row squared error: padded rows count for nothing.
    weight = valid_mask(valid_rows, x.shape[1]).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="mse")
    model.fit(x, x, sample_weight=weight, epochs=cfg.epochs, batch_size=cfg.batch_size, shuffle=True, verbose=0)


def _keras_recon(model: Any, x: np.ndarray[Any, Any], batch: int = 4096) -> np.ndarray[Any, np.dtype[np.float32]]:
    # Eager calls in chunks: model.predict traces a graph first, which costs more than scoring a holdout set.
    chunks = [np.asarray(model(x[i : i + batch], training=False), np.float32) for i in range(0, len(x), batch)]
    return np.concatenate(chunks) if chunks else np.zeros_like(x, np.float32)


def export_autoencoder(model: Any, opset: int = DEFAULT_OPSET) -> bytes:
    """The ONNX bytes of :func:`build_autoencoder`'s model (in memory, no file); :class:`ExportError` on failure."""
    data: bytes = convert(model, OUTPUT_NAME, "the novelty model", opset).SerializeToString()
    return data


def check_recon_parity(model: Any, onnx: bytes, x: np.ndarray[Any, Any], atol: float = PARITY_ATOL) -> float:
    """The largest |Keras - ORT| of the reconstructions of ``x``; :class:`ExportError` above ``atol``."""
    ort_recon = open_session(onnx).run([OUTPUT_NAME], {INPUT_NAME: np.asarray(x, np.float32)})[0]
    diff = float(np.max(np.abs(_keras_recon(model, x) - ort_recon))) if len(x) else 0.0
    if not diff <= atol:
        raise ExportError(f"novelty model: ONNX Runtime disagrees with Keras on {len(x)} windows: max abs diff "
                          f"{diff:.3g} (tolerance {atol:g})")  # fmt: skip
    return diff


def _check_input(windows: np.ndarray[Any, Any], valid_rows: np.ndarray[Any, Any]) -> None:
    usable = int((np.asarray(valid_rows) > 0).sum()) if np.ndim(valid_rows) == 1 else 0
    if len(windows) < MIN_WINDOWS or usable < MIN_WINDOWS:
        raise ValueError(f"a novelty model needs at least {MIN_WINDOWS} benign windows with a real flow, got "
                         f"{usable} (of {len(windows)} windows)")  # fmt: skip


def train_novelty(
    windows: np.ndarray[Any, Any], valid_rows: np.ndarray[Any, Any], cfg: NoveltyConfig | None = None
) -> NoveltyArtifact:
    """Train, threshold, export and check a site's novelty model on its benign ``windows``.

    ``windows`` are (N, T, F) scaled model inputs, left-padded; ``valid_rows`` (N,) counts the real rows at the
    end of each window. Raises ``ValueError`` for fewer than 50 windows with a real flow (or bad shapes),
    :class:`ExportError` when the export fails or disagrees with Keras.
    """
    cfg = cfg or NoveltyConfig()
    start = time.perf_counter()
    _check_input(windows, valid_rows)
    x = prepare_windows(windows, valid_rows)  # validates shapes, clips, zeroes padding
    v = np.asarray(valid_rows)
    train, hold = split_indices(v, cfg)
    import keras  # after the checks: a bad call fails fast, without loading TensorFlow

    keras.utils.set_random_seed(cfg.seed)  # Python, NumPy and TensorFlow
    model = build_autoencoder(x.shape[1], x.shape[2], cfg.units)
    _fit(model, x[train], v[train], cfg)
    hold_errors = reconstruction_errors(x[hold], _keras_recon(model, x[hold]), v[hold])
    threshold = max(float(np.quantile(hold_errors, cfg.quantile)), THRESHOLD_FLOOR)
    onnx = export_autoencoder(model)
    check_recon_parity(model, onnx, x[hold[:PARITY_WINDOWS]])
    try:
        NoveltyScorer(onnx, threshold)  # the serving side accepts the graph (names, shapes, types)
    except ModelCardError as err:
        raise ExportError(f"the exported novelty model does not load for serving: {err}") from err
    return NoveltyArtifact(
        onnx=onnx,
        sha256=hashlib.sha256(onnx).hexdigest(),
        threshold=threshold,
        error_quantiles={k: float(np.quantile(hold_errors, q)) for k, q in QUANTILES.items()},
        windows=len(train),
        holdout_windows=len(hold),
        seconds=time.perf_counter() - start,
        window_length=int(x.shape[1]),
        features=int(x.shape[2]),
    )
