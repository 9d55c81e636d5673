"""``tapwatch score FLOWS.csv -o OUT.csv``: one verdict per flow of a CICFlowMeter-style CSV (issue 3).

Every input row is written back unchanged, followed by :data:`OUTPUT_COLUMNS`: the predicted class, the
attack score ``1 - P(benign)`` (as the inference worker computes it), the window mode, the flows in the
row's window and the model. Headers of both CIC-IDS2017 releases and of ``tapwatch flows`` are read. The
model is ``--model``, else the first of :func:`shipped_models` whose card features the CSV has. With the
card's window key (``Src IP``) and ``Timestamp``, a window holds a host's last T flows by start time (ties
in file order, as training's ``Order.TIME``); else each flow is alone in a zero-padded window. Values are
cleaned as the dataset loaders clean them; CICFlowMeter's µs time features are quantised to the sensor's
1 ms, ``tapwatch flows`` output is not (quantising it again would round its IAT means and stds).

Bounded work: files over ``--max-size-mb`` are refused. Pass 1 parses ``--chunk-rows`` rows at a time and
spools the scaled rows (F × 4 bytes each) to a temporary file, keeping 36 bytes per row in memory for the
host index; pass 2 streams the text rows, gathers their windows and writes them out.
"""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

import click
import numpy as np
import pandas as pd

from tapwatch.capture.flowcsv import EXTRA_COLUMNS
from tapwatch.features.card import ModelCard, card_path_for, load_card
from tapwatch.features.cli import run_guarded
from tapwatch.features.contract import FEATURE_NAMES, TIME_RESOLUTION_US
from tapwatch.features.errors import BadInputError, ConfigError, ModelCardError
from tapwatch.features.output import replaced_when_done
from tapwatch.features.resolution import quantize_columns
from tapwatch.features.window import WindowKey
from tapwatch.inference.model import Model, load_model
from tapwatch.models.scoring.windows import KEY_COLUMNS, HostIndex, NotTimes, keys_and_times
from tapwatch.models.training.data import ORIGINAL_TO_CORRECTED, map_cic_columns
from tapwatch.models.training.data_common import clean_numeric
from tapwatch.models.training.data_scaling import scale_features

DEPLOYMENT_MODEL = "hybrid-cic"
"""The stem of the model ``score`` tries first; ``hybrid-cic*`` are its variants. ``score`` labels CICFlowMeter CSVs
with CIC-IDS2017's classes, so it keeps the CIC-IDS2017 Hybrid (``detect`` and ``run`` serve ``hybrid-lab``)."""
MODELS_DIR = Path(__file__).resolve().parents[1]
"""The shipped models' folder (``models/``, installed as ``tapwatch.models``)."""
OUTPUT_COLUMNS = ("predicted_class", "score", "window_mode", "window_flows", "model", "model_version")
BATCH = 256
"""Windows per ONNX Runtime run: the cost table's batch; 256 × T × F × 4 bytes is 840 kB at T = 10."""
MB = 1024 * 1024


class WindowMode(str, Enum):
    PER_HOST = "per_host"
    SINGLE_FLOW = "single_flow"


class HeaderVariant(str, Enum):
    ORIGINAL = "original CIC-IDS2017 release"
    CORRECTED = "corrected CIC-IDS2017 release"
    TAPWATCH = "tapwatch flows output"

    @classmethod
    def of(cls, header: tuple[str, ...]) -> HeaderVariant:
        """Which writer a header comes from.

        >>> HeaderVariant.of((" Flow Duration", " Total Fwd Packets")).name
        'ORIGINAL'
        """
        names = {h.strip() for h in header}
        if set(EXTRA_COLUMNS) <= names:
            return cls.TAPWATCH
        if names & set(ORIGINAL_TO_CORRECTED) or any(h != h.strip() for h in header):
            return cls.ORIGINAL
        return cls.CORRECTED


@dataclass(frozen=True)
class ScoreConfig:
    """What ``tapwatch score`` was asked to do.

    Parameters
    ----------
    flows, output
        The CSV to score; the CSV to write (replaced only once it is complete).
    model, models_dir
        ``--model`` (a name in ``models_dir`` or an ``.onnx`` path; ``None``: choose); where shipped models
        (``NAME.onnx`` beside ``NAME.card.json``) are.
    max_bytes, chunk_rows, threads
        Input size limit; rows per chunk; ONNX Runtime threads.

    Example
    -------
    >>> ScoreConfig(Path("flows.csv"), "out.csv").chunk_rows
    10000
    """

    flows: Path
    output: str
    model: str | None = None
    models_dir: Path = MODELS_DIR
    max_bytes: int = 512 * MB
    # 10,000 rows parse into about 10 MB of numbers; 100,000 tripled the peak memory and gained nothing.
    chunk_rows: int = 10_000
    threads: int = 1

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.chunk_rows < 1 or self.threads < 1:
            raise ConfigError("score", "max size, chunk rows and threads must be >= 1")


@dataclass(frozen=True)
class CsvLayout:
    """A flows CSV's header: its spelling and the position of each corrected-release column."""

    path: Path
    header: tuple[str, ...]
    variant: HeaderVariant
    positions: dict[str, int]
    passthrough: tuple[int, ...]

    def missing(self, names: list[str] | tuple[str, ...]) -> list[str]:
        return [n for n in names if n not in self.positions]


@dataclass
class ScoreReport:
    """What a run did, for the lines on standard error."""

    variant: HeaderVariant
    output: str
    model: str = ""
    why: str = ""
    mode: WindowMode = WindowMode.SINGLE_FLOW
    mode_detail: str = ""
    quantised: bool = False
    rows: int = 0
    missing_values: int = 0
    infinite_values: int = 0
    predicted: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        resolution = "quantised from µs to the sensor's 1 ms" if self.quantised else "kept as they are"
        counts = ", ".join(f"{k} {v}" for k, v in self.predicted.most_common())
        return [f"model {self.model}: {self.why}", f"header: {self.variant.value}; time features {resolution}",
                f"window_mode={self.mode.value}: {self.mode_detail}",
                f"replaced {self.missing_values} missing ('-', empty, NaN) and {self.infinite_values} ±inf feature "
                "values with 0, as the dataset loaders do", *self.notes,
                f"scored {self.rows} flows ({counts}) into {self.output}"]  # fmt: skip


def read_layout(path: Path, max_bytes: int) -> CsvLayout:
    """Check that ``path`` is a flows CSV within the size limit and map its header."""
    size = path.stat().st_size
    if size > max_bytes:
        raise BadInputError(str(path), f"{size / MB:.3g} MB is over the {max_bytes / MB:.3g} MB limit (--max-size-mb)")
    with path.open("rb") as fh:
        head = fh.read(65536)
    if not head.strip():
        raise BadInputError(str(path), "the file is empty")
    if head.startswith(b"\x1f\x8b") or b"\x00" in head:
        raise BadInputError(str(path), "binary data, not a CSV text file (decompress it; pcaps go to tapwatch flows)")
    try:
        first = head.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError as err:
        raise BadInputError(str(path), f"the header line is not UTF-8 text ({err})") from err
    header = tuple(next(csv.reader([first]), []))
    rename = map_cic_columns(header).rename
    positions = {rename[h]: i for i, h in reversed(list(enumerate(header))) if h in rename}  # the first wins
    if not any(f in positions for f in FEATURE_NAMES):
        raise BadInputError(str(path), f"not a CICFlowMeter-style CSV: no flow feature in its header {first[:80]!r}")
    passthrough = tuple(i for i, h in enumerate(header) if h.strip() not in OUTPUT_COLUMNS)
    return CsvLayout(path, header, HeaderVariant.of(header), positions, passthrough)


def shipped_models(models_dir: Path, notes: list[str]) -> list[tuple[Path, ModelCard]]:
    """``NAME.onnx`` files with a valid card (:func:`card_path_for`), in the order ``score`` tries them: the deployment
    model's family (``hybrid-cic*``) first; in each group more features first (they use more of the CSV)."""
    out = []
    for onnx in sorted(models_dir.glob("*.onnx")):
        if (card := card_path_for(onnx)).exists():
            try:
                out.append((onnx, load_card(card)))
            except ModelCardError as err:
                notes.append(f"skipped {onnx.name}: {err}")
    family = DEPLOYMENT_MODEL
    return sorted(out, key=lambda m: (not m[0].stem.startswith(family), -len(m[1].features), m[0].stem != family))


def _load(onnx: Path, threads: int) -> Model:
    if not onnx.is_file():
        known = [p.stem for p, _ in shipped_models(onnx.parent, [])]
        raise BadInputError("--model", f"{onnx}: no such model (shipped in {onnx.parent}: {known or 'none'})")
    try:
        return load_model(onnx, threads=threads)
    except ModelCardError as err:
        raise BadInputError(str(onnx), f"model refused: {err}") from err


def choose_model(layout: CsvLayout, cfg: ScoreConfig, notes: list[str]) -> tuple[Model, Path, str]:
    """The model named by ``--model``, else the first shipped one whose features the CSV has.

    When none fits, the error lists the columns missing for the shipped model that lacks the fewest.
    """
    shipped = shipped_models(cfg.models_dir, notes)
    if cfg.model is not None:
        named = cfg.model.endswith(".onnx") or len(Path(cfg.model).parts) > 1
        onnx = Path(cfg.model) if named else cfg.models_dir / f"{cfg.model}.onnx"
        model = _load(onnx, cfg.threads)
        missing = layout.missing(model.card.features)
        if missing:
            fits = [p.stem for p, c in shipped if not layout.missing(c.features)]
            hint = f"; shipped model {fits[0]} fits (omit --model)" if fits else ""
            problem = f"missing feature columns {missing} that model {model.card.name} needs{hint}"
            raise BadInputError(str(layout.path), problem)
        return model, onnx, "named by --model"
    if not shipped:
        raise BadInputError(str(cfg.models_dir), "no shipped model (NAME.onnx with NAME.card.json); pass --model")
    for onnx, card in shipped:
        if not layout.missing(card.features):
            why = f"the first shipped model whose {len(card.features)} features the CSV has (--model to choose)"
            return _load(onnx, cfg.threads), onnx, why
    needs = "; ".join(f"{c.name} needs {len(c.features)}" for _, c in shipped)
    closest = min((c for _, c in shipped), key=lambda c: len(layout.missing(c.features)))  # the first of equals
    problem = f"missing feature columns {layout.missing(closest.features)} that {closest.name} needs"
    raise BadInputError(str(layout.path), f"{problem} ({layout.variant.value}); no shipped model fits ({needs})")


def _frames(layout: CsvLayout, cfg: ScoreConfig) -> Iterator[pd.DataFrame]:
    """Pass 1: the data rows parsed as the loaders parse them (``-`` is missing), in chunks."""
    text = {layout.positions[c] for c in ("Src IP", "Dst IP", "Timestamp") if c in layout.positions}
    try:
        with pd.read_csv(layout.path, header=None, skiprows=1, names=list(range(len(layout.header))),
                         dtype={i: str for i in text}, na_values=["-"], encoding="utf-8-sig",
                         chunksize=cfg.chunk_rows) as reader:  # fmt: skip
            yield from reader
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise BadInputError(str(layout.path), f"not a well-formed CSV: {str(err).strip()}") from err


def _features(frame: pd.DataFrame, layout: CsvLayout, card: ModelCard, start: int, report: ScoreReport) -> Any:
    """Scaled float32 rows (n, F) in the card's order, cleaned as the loaders clean them."""
    raw = pd.DataFrame({f: frame[layout.positions[f]] for f in FEATURE_NAMES if f in layout.positions})
    x, counts, _ = clean_numeric(raw, f"{layout.path}, data rows {start + 1}-{start + len(frame)}")
    report.missing_values += counts["missing_values"]
    report.infinite_values += counts["infinite_values"]
    if report.quantised:
        quantize_columns(x)
    return scale_features(x[list(card.features)], card.scaler)


def _spool(layout: CsvLayout, cfg: ScoreConfig, card: ModelCard, report: ScoreReport, tmp: Path) -> tuple[Any, Any]:
    """Pass 1: scaled rows into a file in ``tmp``; in per-host mode also the host index (in memory).

    A Timestamp column that holds no times turns the whole file to single-flow windows, with one line saying why
    (as a file without source IPs is scored), rather than refusing it.
    """
    codes: dict[str, int] = {}
    keys: list[np.ndarray] = []
    times: list[np.ndarray] = []
    n = 0
    with (tmp / "rows.f32").open("wb") as fh:
        for frame in _frames(layout, cfg):
            fh.write(np.ascontiguousarray(_features(frame, layout, card, n, report), dtype=np.float32).tobytes())
            if report.mode is WindowMode.PER_HOST:
                try:
                    key, t = keys_and_times(frame, layout.positions, WindowKey(card.window_key))
                except NotTimes as err:
                    report.mode, keys, times = WindowMode.SINGLE_FLOW, [], []
                    report.mode_detail = (f"each flow alone in a zero-padded window of T={card.window_length}: "
                                          f"windows could not be built ({err}, data rows from {n + 1})")  # fmt: skip
                else:
                    local, uniques = pd.factorize(key)
                    keys.append(np.array([codes.setdefault(u, len(codes)) for u in uniques], dtype=np.int32)[local])
                    times.append(t)
            n += len(frame)
    if n == 0:
        raise BadInputError(str(layout.path), "a header but no flow rows")
    store = np.memmap(tmp / "rows.f32", dtype=np.float32, mode="r", shape=(n, len(card.features)))
    per_host = report.mode is WindowMode.PER_HOST
    return (HostIndex.build(np.concatenate(keys), np.concatenate(times)) if per_host else None), store


def _window_plan(layout: CsvLayout, card: ModelCard) -> tuple[WindowMode, str]:
    t, key = card.window_length, WindowKey(card.window_key)
    lacking = layout.missing([*KEY_COLUMNS[key], "Timestamp"])
    if t == 1:
        return WindowMode.SINGLE_FLOW, "the model's window holds one flow (T=1)"
    if lacking:
        return WindowMode.SINGLE_FLOW, f"each flow alone in a zero-padded window of T={t} (no {' or '.join(lacking)})"
    return WindowMode.PER_HOST, f"the last T={t} flows per {' > '.join(KEY_COLUMNS[key])} in time order"


def _predict(model: Model, windows: np.ndarray) -> tuple[list[str], list[str]]:
    """Predicted class names and attack scores (1 - P(benign), clipped as the worker clips it) as text."""
    card = model.card
    probs = np.concatenate([model.predict(windows[i : i + BATCH]) for i in range(0, len(windows), BATCH)])
    finite = np.isfinite(probs).all(axis=1)
    scores = np.clip(1.0 - probs[:, card.class_names.index(card.benign_class)].astype(np.float64), 0.0, 1.0)
    names = [card.class_names[k] if ok else "" for k, ok in zip(probs.argmax(axis=1), finite, strict=True)]
    return names, [f"{s:.6f}" if ok else "" for s, ok in zip(scores, finite, strict=True)]


def _text_rows(layout: CsvLayout, size: int) -> Iterator[list[list[str]]]:
    """Pass 2: the data rows as text (blank lines skipped, short rows padded), ``size`` rows at a time."""
    n, keep = len(layout.header), None if len(layout.passthrough) == len(layout.header) else layout.passthrough
    batch: list[list[str]] = []
    with layout.path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            if row:
                row += [""] * (n - len(row))
                batch.append(row if keep is None else [row[i] for i in keep])
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def _write_rows(out: TextIO, layout: CsvLayout, cfg: ScoreConfig, model: Model, report: ScoreReport) -> None:
    card, t = model.card, model.card.window_length
    with tempfile.TemporaryDirectory(prefix="tapwatch-score-") as tmp:
        index, store = _spool(layout, cfg, card, report, Path(tmp))
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([layout.header[i] for i in layout.passthrough] + list(OUTPUT_COLUMNS))
        for batch in _text_rows(layout, cfg.chunk_rows):
            rows = np.arange(report.rows, report.rows + len(batch))
            if rows[-1] >= len(store):
                raise BadInputError(str(layout.path), "rows differ between the two reads (did the file change?)")
            if index is None:
                windows = np.zeros((len(rows), t, len(card.features)), dtype=np.float32)
                windows[:, -1], valid = store[rows], np.ones(len(rows), dtype=np.int64)
            else:
                where, ok = index.windows_rows(rows, t)
                windows, valid = np.asarray(store[where.ravel()]).reshape(len(rows), t, -1) * ok[..., None], ok.sum(1)
            names, scores = _predict(model, windows)
            tail = (report.mode.value, card.name, card.version)
            writer.writerows(
                [*r, c, s, tail[0], v, *tail[1:]] for r, c, s, v in zip(batch, names, scores, valid, strict=True)
            )
            report.rows += len(batch)
            report.predicted.update(names)
        if report.rows != len(store):
            raise BadInputError(str(layout.path), "rows differ between the two reads (did the file change?)")


def score_csv(cfg: ScoreConfig) -> ScoreReport:
    """Score ``cfg.flows`` into ``cfg.output``; a partly written output file is removed on error."""
    layout = read_layout(cfg.flows, cfg.max_bytes)
    report = ScoreReport(variant=layout.variant, output=cfg.output)
    model, onnx, report.why = choose_model(layout, cfg, report.notes)
    card = model.card
    report.model = f"{card.name} {card.version} ({onnx})"
    report.quantised = layout.variant is not HeaderVariant.TAPWATCH and card.time_resolution_us == TIME_RESOLUTION_US
    report.mode, report.mode_detail = _window_plan(layout, card)
    if len(layout.passthrough) < len(layout.header):
        report.notes.append(f"the input's own {[c for c in OUTPUT_COLUMNS if c in layout.header]} columns replaced")
    with replaced_when_done(cfg.output) as part, part.open("w", newline="", encoding="utf-8") as out:
        _write_rows(out, layout, cfg, model, report)
    return report


@click.command("score")
@click.argument("flows", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The scored CSV to write.")
@click.option("--model", help=f"Model name in the models directory, or an .onnx file with NAME.card.json beside it "
              f"[default: {DEPLOYMENT_MODEL}, else the first shipped model whose features the CSV has].")  # fmt: skip
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=MODELS_DIR,
              show_default="the installed tapwatch models", help="Where shipped models are looked for.")  # fmt: skip
@click.option("--max-size-mb", type=click.FloatRange(min=0, min_open=True), default=512.0, show_default=True,
              help="Refuse larger files.")  # fmt: skip
@click.option("--chunk-rows", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True, help="ONNX Runtime threads.")
def score_command(flows: Path, output: str, max_size_mb: float, **kw: Any) -> None:
    """Score a CICFlowMeter-style CSV: each row gets the predicted class and the attack score.

    Example: tapwatch score flows.csv -o scored.csv
    """

    def body() -> int:
        cfg = ScoreConfig(flows, output, max_bytes=max(1, int(max_size_mb * MB)), **kw)
        for line in score_csv(cfg).lines():
            click.echo(f"tapwatch score: {line}", err=True)
        return 0

    run_guarded(body)
