"""The detection models as pure functions of frozen hyperparameter dataclasses (issue 3, "Architectures").

Every model takes a float32 window of shape (T, F) (input ``windows``: the last T flows of one host, oldest
first, left-padded with zeros) and returns the per-class softmax ``probs`` of the window's LAST flow: the label
of a window is the label of its newest flow, and every other row is its past (causal).

* :class:`HybridParams` — the reconstruction of Hariharan et al. (IEEE Access 2025), whose figures were lost:
  ConvLSTM "subnets" over the time axis of a (T, F, 1) window. Encoder ConvLSTM1D(32, k=3) → BatchNorm →
  Dropout → ConvLSTM1D(64, k=3) returning its state; decoder ConvLSTM1D(64, k=3) initialised from that state,
  over the encoder outputs; head per time step: average pooling over the feature axis, Dense, softmax. Only the
  last step is read, so the head runs on the decoder's last output alone (the same numbers, T times cheaper).
  Convolutions use ``padding="same"`` so that the feature axis keeps its length (a projection may make it
  small). Ablations: ``cell`` (ConvLSTM or plain LSTM), ``decoder`` on/off, ``filters``. The speed lever
  ``projection=E`` maps the F features of each flow to E learned values (Dense per time step) before the
  recurrent layers, so the ConvLSTM runs over (T, E, 1) instead of (T, F, 1).
* :class:`Seq2SeqParams` — LSTM(128) encoder → LSTM(128) decoder initialised from the encoder state, over the
  encoder outputs → head at the last step.
* :class:`LuNetParams` — Wu & Guo (IEEE SSCI 2019): three blocks Conv1D → MaxPool → BatchNorm → LSTM → Dropout
  (64/128/256 filters), a 512-filter Conv1D, global average pooling, the output layer. Adaptation to windows:
  the convolutions and LSTMs run over the TIME axis with the F features as channels, and the max-pools use
  ``padding="same"`` (pool 2), so T = 10 shrinks 10 → 5 → 3 → 2 and T = 1 stays 1; the average pool then spans
  the whole (causal) window. Pooling over the feature axis instead would make the cost grow with F and lose
  nothing at T = 1 that this keeps.
* :class:`MLPParams` — an MLP on the flattened window (the baseline).

:data:`PRESETS` names the configurations that are trained, exported and costed; :func:`preset` fills in the
window shape and the class count.

>>> p = preset("hybrid-fast", window_length=10, n_features=82, n_classes=2)
>>> p.projection, p.filters
(8, (8, 8, 8))
>>> preset("lunet", window_length=1, n_features=40, n_classes=5).window_length
1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

INPUT_NAME = "windows"
OUTPUT_NAME = "probs"


class Arch(str, Enum):
    """The model families."""

    HYBRID = "hybrid"
    SEQ2SEQ = "seq2seq"
    LUNET = "lunet"
    MLP = "mlp"


class Cell(str, Enum):
    """The recurrent cell of the Hybrid's subnets (ablation)."""

    CONVLSTM = "convlstm"
    LSTM = "lstm"


def _check_shape(window_length: int, n_features: int, n_classes: int) -> None:
    if window_length < 1:
        raise ValueError(f"window_length must be >= 1, got {window_length}")
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")


@dataclass(frozen=True)
class HybridParams:
    """Hyperparameters of the Hybrid Seq2Seq-ConvLSTM (the reconstruction and its ablations).

    Parameters
    ----------
    window_length, n_features, n_classes
        T, F and the number of classes.
    cell
        ``CONVLSTM`` (the paper) or ``LSTM`` (ablation: no convolution over the feature axis; the filter
        counts become LSTM units).
    filters
        Filters of encoder layer 1, encoder layer 2 and the decoder (the decoder must match layer 2 to take
        its state).
    kernel_size
        Kernel of the ConvLSTM1D convolutions over the feature axis.
    decoder
        With the decoder (the paper) or without it (ablation: the head reads encoder layer 2).
    projection
        ``None`` (the paper) or E: a learned Dense(E) per time step before the recurrent layers.
    dropout
        Dropout after the first encoder layer (training only).
    head_units
        Units of the hidden Dense of the head; 0 goes straight from the pooled features to the softmax.
    unroll
        Unroll the recurrences (a static graph instead of a loop; T is small).
    norm
        The normalisation after the first encoder layer: ``batch`` (the reconstruction) or ``layer`` (per
        window, the same in training and inference; see the lab report's recipe check).

    Example
    -------
    >>> HybridParams(window_length=10, n_features=82, n_classes=2).filters
    (32, 64, 64)
    """

    window_length: int
    n_features: int
    n_classes: int
    cell: Cell = Cell.CONVLSTM
    filters: tuple[int, int, int] = (32, 64, 64)
    kernel_size: int = 3
    decoder: bool = True
    projection: int | None = None
    dropout: float = 0.2
    norm: str = "batch"
    head_units: int = 32
    unroll: bool = False

    def __post_init__(self) -> None:
        _check_shape(self.window_length, self.n_features, self.n_classes)
        if self.decoder and self.filters[2] != self.filters[1]:
            raise ValueError(f"decoder filters {self.filters[2]} must equal encoder layer 2 ({self.filters[1]})")
        if self.projection is not None and self.projection < 1:
            raise ValueError(f"projection must be None or >= 1, got {self.projection}")


@dataclass(frozen=True)
class Seq2SeqParams:
    """Hyperparameters of the LSTM Seq2Seq.

    Example
    -------
    >>> Seq2SeqParams(window_length=10, n_features=82, n_classes=2).units
    128
    """

    window_length: int
    n_features: int
    n_classes: int
    units: int = 128
    dropout: float = 0.2
    unroll: bool = False

    def __post_init__(self) -> None:
        _check_shape(self.window_length, self.n_features, self.n_classes)


@dataclass(frozen=True)
class LuNetParams:
    """Hyperparameters of LuNet adapted to windows (see the module docstring).

    Example
    -------
    >>> LuNetParams(window_length=10, n_features=82, n_classes=2).filters
    (64, 128, 256)
    """

    window_length: int
    n_features: int
    n_classes: int
    filters: tuple[int, int, int] = (64, 128, 256)
    final_filters: int = 512
    kernel_size: int = 3
    pool_size: int = 2
    dropout: float = 0.2
    unroll: bool = False

    def __post_init__(self) -> None:
        _check_shape(self.window_length, self.n_features, self.n_classes)


@dataclass(frozen=True)
class MLPParams:
    """Hyperparameters of the MLP baseline on the flattened window.

    Example
    -------
    >>> MLPParams(window_length=1, n_features=82, n_classes=2).hidden
    (256, 128)
    """

    window_length: int
    n_features: int
    n_classes: int
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.2

    def __post_init__(self) -> None:
        _check_shape(self.window_length, self.n_features, self.n_classes)


Params = HybridParams | Seq2SeqParams | LuNetParams | MLPParams

PRESETS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    # The reconstruction of the paper: ~150 M multiply-adds per window at T = 10, F = 82.
    "hybrid-full": (HybridParams, {}),
    # The shipped Hybrid: same topology, F projected to 8 learned values and 8 filters everywhere, unrolled;
    # chosen to pass 10,000 windows/s per core at batch 256 (see tapwatch.models.evaluation.cost).
    "hybrid-fast": (HybridParams, {"projection": 8, "filters": (8, 8, 8), "head_units": 16, "unroll": True}),
    "hybrid-lstm": (HybridParams, {"cell": Cell.LSTM}),
    "hybrid-nodecoder": (HybridParams, {"decoder": False}),
    "seq2seq": (Seq2SeqParams, {}),
    "lunet": (LuNetParams, {}),
    "mlp": (MLPParams, {}),
}


def preset(name: str, window_length: int, n_features: int, n_classes: int, **overrides: Any) -> Params:
    """The hyperparameters of a named preset for a window shape and class count.

    ``overrides`` replace preset fields (for tiny test models or ablations).
    """
    try:
        cls, fields = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; valid: {', '.join(PRESETS)}") from None
    params: Params = cls(window_length=window_length, n_features=n_features, n_classes=n_classes, **fields)
    return dataclasses.replace(params, **overrides) if overrides else params


def arch_of(params: Params) -> Arch:
    """The family a hyperparameter object builds."""
    return {HybridParams: Arch.HYBRID, Seq2SeqParams: Arch.SEQ2SEQ, LuNetParams: Arch.LUNET, MLPParams: Arch.MLP}[
        type(params)
    ]


def build(params: Params) -> keras.Model:
    """Build the (uncompiled) Keras model that ``params`` describes; the same params give the same graph."""
    builders = {Arch.HYBRID: _hybrid, Arch.SEQ2SEQ: _seq2seq, Arch.LUNET: _lunet, Arch.MLP: _mlp}
    return builders[arch_of(params)](params)  # type: ignore[operator]


def _input(params: Params) -> Any:
    import keras

    return keras.Input(shape=(params.window_length, params.n_features), dtype="float32", name=INPUT_NAME)


def _output(x: Any, n_classes: int) -> Any:
    import keras

    return keras.layers.Dense(n_classes, activation="softmax", name=OUTPUT_NAME)(x)


def _hybrid(p: HybridParams) -> keras.Model:
    import keras
    from keras import layers

    inp = _input(p)
    x = inp
    if p.projection is not None:
        x = layers.Dense(p.projection, name="projection")(x)  # per time step: (T, E)
    f1, f2, f3 = p.filters
    if p.cell is Cell.CONVLSTM:
        x = layers.Reshape((p.window_length, p.projection or p.n_features, 1), name="subnet_in")(x)

        def rnn(filters: int, name: str, **kw: Any) -> Any:
            return layers.ConvLSTM1D(filters, p.kernel_size, padding="same", unroll=p.unroll, name=name, **kw)
    else:

        def rnn(filters: int, name: str, **kw: Any) -> Any:
            return layers.LSTM(filters, unroll=p.unroll, name=name, **kw)

    x = rnn(f1, "encoder_1", return_sequences=True)(x)
    if p.norm == "layer":
        x = layers.LayerNormalization(name="encoder_ln")(x)
    elif p.norm == "batch":
        x = layers.BatchNormalization(name="encoder_bn")(x)
    else:
        raise ValueError(f"unknown norm {p.norm!r}; valid: batch, layer")
    x = layers.Dropout(p.dropout, name="encoder_dropout")(x)
    if p.decoder:
        seq, h, c = rnn(f2, "encoder_2", return_sequences=True, return_state=True)(x)
        x = rnn(f3, "decoder")(seq, initial_state=[h, c])
    else:
        x = rnn(f2, "encoder_2")(x)
    if p.cell is Cell.CONVLSTM:
        x = layers.GlobalAveragePooling1D(name="pool_features")(x)  # (E or F, filters) -> (filters,)
    if p.head_units:
        x = layers.Dense(p.head_units, activation="relu", name="head")(x)
    return keras.Model(inp, _output(x, p.n_classes), name="hybrid")


def _seq2seq(p: Seq2SeqParams) -> keras.Model:
    import keras
    from keras import layers

    inp = _input(p)
    seq, h, c = layers.LSTM(p.units, return_sequences=True, return_state=True, unroll=p.unroll, name="encoder")(inp)
    seq = layers.Dropout(p.dropout, name="encoder_dropout")(seq)
    x = layers.LSTM(p.units, unroll=p.unroll, name="decoder")(seq, initial_state=[h, c])
    return keras.Model(inp, _output(x, p.n_classes), name="seq2seq")


def _lunet(p: LuNetParams) -> keras.Model:
    import keras
    from keras import layers

    inp = _input(p)
    x = inp
    for i, filters in enumerate(p.filters, start=1):
        x = layers.Conv1D(filters, p.kernel_size, padding="same", activation="relu", name=f"conv_{i}")(x)
        x = layers.MaxPooling1D(p.pool_size, padding="same", name=f"pool_{i}")(x)
        x = layers.BatchNormalization(name=f"bn_{i}")(x)
        x = layers.LSTM(filters, return_sequences=True, unroll=p.unroll, name=f"lstm_{i}")(x)
        x = layers.Dropout(p.dropout, name=f"dropout_{i}")(x)
    x = layers.Conv1D(p.final_filters, p.kernel_size, padding="same", activation="relu", name="conv_final")(x)
    x = layers.GlobalAveragePooling1D(name="avg_pool")(x)
    return keras.Model(inp, _output(x, p.n_classes), name="lunet")


def _mlp(p: MLPParams) -> keras.Model:
    import keras
    from keras import layers

    inp = _input(p)
    x = layers.Flatten(name="flatten")(inp)
    for i, units in enumerate(p.hidden, start=1):
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        x = layers.Dropout(p.dropout, name=f"dropout_{i}")(x)
    return keras.Model(inp, _output(x, p.n_classes), name="mlp")
