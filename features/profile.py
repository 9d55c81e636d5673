"""A site profile: what one model learned about one site's benign traffic (``tapwatch learn`` writes it).

The supervised model knows a 2017 testbed and the lab; it knows nothing of the network it watches. A profile adds
that, learned from the site's own benign traffic during a learning period, in one versioned JSON file:

* the **site baseline** (:class:`~tapwatch.features.baseline.SiteBaseline`): the volume view's thresholds, the
  benign medians summaries quote, the services polled on a timer, the window view's opening bars;
* **family thresholds**: per family, the score (summed probability of that family's classes) that at most
  ``budget`` of the site's benign windows reach; a window is evidence of a family only at or above it;
* the **novelty model**: the paper's Seq2Seq encoder-decoder trained as an autoencoder on the site's benign windows
  (ONNX, embedded), its threshold (a high quantile of its reconstruction error on held-out benign windows) and the
  per-feature mean and spread of the benign windows (what drift is measured against);
* the **rule** that combines the family scores with novelty (:class:`Rule`);
* its **card**: the data it was learned from (files, sha256s, flows, windows, time span), when, how long learning
  took, the poisoning check (episodes found in the learning traffic and left out), and the model it belongs to
  (name, version, the ONNX file's sha256): a profile is refused for any other model.

A profile is JSON, never a pickle: the novelty graph is base64 inside it, checked against its sha256 on load.
:func:`load_profile` refuses an unknown format or version, a corrupt file or another model's profile with one
line (a :class:`~tapwatch.features.errors.ConfigError`); a service that reloads keeps the profile it has.

>>> p = SiteProfile(card=ProfileCard(model=ProfileModel(name="m", version="1", onnx_sha256="ab")))
>>> p.family_threshold("scan"), p.card.model.name
(0.0, 'm')
"""

from __future__ import annotations

import base64
import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tapwatch.features.baseline import SiteBaseline
from tapwatch.features.errors import ConfigError

PROFILE_FORMAT = "tapwatch-site-profile"
PROFILE_SCHEMA_VERSION = 1
PROFILE_SUFFIX = ".profile.json"
"""A model's default profile sits beside it: ``NAME.onnx`` -> ``NAME.profile.json``."""
DEFAULT_BUDGET = 0.001
"""Benign windows allowed over a family threshold: 1 per 1,000."""


class RuleKind(str, Enum):
    """How the family scores and novelty combine into window-view evidence."""

    SUPERVISED = "supervised"
    """A window is evidence when the model calls it an attack over the card's threshold and its family's."""
    NOVEL = "novel"
    """... and, besides, it is unlike the site's benign windows (novelty ratio at or over ``novelty_min``)."""


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: RuleKind = RuleKind.SUPERVISED
    novelty_min: float = Field(default=1.0, gt=0)
    """Reconstruction error over the novelty threshold at which a window counts as unlike the site."""
    chosen_on: str = ""
    """The data the rule was chosen on (never a test set), and what it measured there."""


class ProfileModel(BaseModel):
    """The model a profile belongs to."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    version: str
    onnx_sha256: str


class ProfileCard(BaseModel):
    """Where a profile came from: model, data, when, how much, how long, what was left out."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: ProfileModel
    created: str = ""
    tapwatch_version: str = ""
    command: str = ""
    data: list[dict[str, Any]] = Field(default_factory=list)
    """One entry per input: path, kind (pcap, flows, live), sha256, flows."""
    flows: int = 0
    windows: int = 0
    span_s: float = 0.0
    """Packet time from the first to the last benign flow of each input, summed over the inputs."""
    seconds: float = 0.0
    """Wall time of learning."""
    budget: float = DEFAULT_BUDGET
    poisoning: dict[str, Any] = Field(default_factory=dict)
    """``checked``: whether detection ran over the input first; ``episodes``: what it found; ``flows_left_out``."""


class Novelty(BaseModel):
    """The novelty model: an ONNX autoencoder of the site's benign windows, its threshold, and the drift reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    onnx_b64: str
    sha256: str
    threshold: float = Field(gt=0)
    error_quantiles: dict[str, float] = Field(default_factory=dict)
    window_length: int = Field(ge=1)
    features: int = Field(ge=1)
    windows: int = 0
    """Benign windows it was trained on."""
    feature_mean: list[float] = Field(default_factory=list)
    feature_std: list[float] = Field(default_factory=list)
    """Per feature, over the newest row of the site's benign windows (scaled as the model sees them)."""

    def onnx(self) -> bytes:
        """The graph's bytes, checked against ``sha256`` (``ValueError`` when they differ)."""
        raw = base64.b64decode(self.onnx_b64.encode("ascii"), validate=True)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != self.sha256:
            raise ValueError(f"novelty graph sha256 {digest[:12]}... does not match {self.sha256[:12]}...")
        return raw

    @classmethod
    def embed(cls, onnx: bytes, **kw: Any) -> Novelty:
        return cls(onnx_b64=base64.b64encode(onnx).decode("ascii"), sha256=hashlib.sha256(onnx).hexdigest(), **kw)


class SiteProfile(BaseModel):
    """See the module docstring."""

    model_config = ConfigDict(extra="forbid")
    format: str = PROFILE_FORMAT
    schema_version: int = PROFILE_SCHEMA_VERSION
    card: ProfileCard
    baseline: SiteBaseline = Field(default_factory=SiteBaseline)
    thresholds: dict[str, float] = Field(default_factory=dict)
    """family -> least family score of window-view evidence (absent: no bar beyond the card's threshold)."""
    novelty: Novelty | None = None
    rule: Rule = Field(default_factory=Rule)

    @model_validator(mode="after")
    def _known(self) -> SiteProfile:
        if self.format != PROFILE_FORMAT:
            raise ValueError(f"not a site profile (format {self.format!r})")
        if self.schema_version != PROFILE_SCHEMA_VERSION:
            raise ValueError(f"unknown profile schema_version {self.schema_version} (this tapwatch reads "
                             f"{PROFILE_SCHEMA_VERSION})")  # fmt: skip
        if self.rule.kind is RuleKind.NOVEL and self.novelty is None:
            raise ValueError("rule 'novel' needs a novelty model")
        return self

    def family_threshold(self, family: str) -> float:
        return float(self.thresholds.get(family, 0.0))

    def check_model(self, name: str, version: str, onnx_sha256: str | None) -> None:
        """Raise ``ValueError`` when the profile belongs to another model than (name, version, sha256)."""
        m = self.card.model
        if (m.name, m.version) != (name, version):
            raise ValueError(f"learned for model {m.name} {m.version}, not {name} {version}")
        if onnx_sha256 is not None and m.onnx_sha256 != onnx_sha256:
            raise ValueError(f"learned for another build of {name} {version} (ONNX sha256 {m.onnx_sha256[:12]}...)")


def load_profile(
    path: str | Path, model: tuple[str, str, str | None] | None = None, subject: str = "profile"
) -> SiteProfile:
    """Read a profile; with ``model`` (name, version, ONNX sha256), check it belongs to it.

    Every problem is one :class:`ConfigError` line naming the file: not JSON, not a profile, an unknown version,
    a field out of place, a novelty graph whose sha256 differs, another model's profile.
    """
    p = Path(path)
    try:
        profile = SiteProfile.model_validate(json.loads(p.read_text()))
        if profile.novelty is not None:
            profile.novelty.onnx()
        if model is not None:
            profile.check_model(*model)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(subject, f"{p}: {where + ': ' if where else ''}{msg}") from err
    except OSError as err:
        raise ConfigError(subject, f"{p}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(subject, f"{p}: not a JSON site profile (not text)") from err
    except json.JSONDecodeError as err:
        raise ConfigError(subject, f"{p}: not a JSON site profile ({err})") from err
    except ValueError as err:  # base64, sha256, model
        raise ConfigError(subject, f"{p}: {err}") from err
    return profile


def profile_to_use(given: str | Path | None, onnx_path: str | Path | None) -> Path | None:
    """``given`` (``--profile``), else the model's default profile when that file exists, else None.

    >>> profile_to_use("site.profile.json", None).as_posix()
    'site.profile.json'
    """
    if given:
        return Path(given)
    default = profile_path_for(onnx_path) if onnx_path is not None else None
    return default if default is not None and default.is_file() else None


def profile_path_for(onnx_path: str | Path) -> Path:
    """The default profile of a model: ``NAME.profile.json`` beside ``NAME.onnx``.

    >>> profile_path_for("models/hybrid-lab.onnx").as_posix()
    'models/hybrid-lab.profile.json'
    """
    return Path(onnx_path).with_suffix(PROFILE_SUFFIX)
