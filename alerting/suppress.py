"""Suppression and thresholds in Suricata's ``threshold.config`` vocabulary, plus whitelisted networks.

One rule per line; ``#`` starts a comment. The keywords (``docs/alerts.md`` has the full reference)::

    suppress gen_id 1, sig_id 9101006                                   # every alert of that signature
    suppress gen_id 1, sig_id 0, track by_src, ip [10.0.0.0/8, !10.9.9.9] # sig_id 0: every signature
    threshold gen_id 1, sig_id 9101005, type limit, track by_src, count 1, seconds 60
    pass-net 192.168.50.0/24                                            # tapwatch: never alert on these
    pass-net 10.1.2.3, track by_src

Time is the alert's event time (the flow's last packet), as Suricata uses packet time, so a pcap replay gives
the same result as the live capture. Threshold state is bounded (LRU over ``max_entries`` tracked addresses).

>>> cfg = parse_threshold_config("threshold gen_id 1, sig_id 5, type limit, track by_src, count 1, seconds 60")
>>> s = Suppressor(cfg)
>>> [s.check(1, 5, "10.0.0.1", "10.0.0.2", t) for t in (0, 1000, 61_000)]
[None, <SuppressReason.THRESHOLD: 'threshold'>, None]
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from tapwatch.features.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Track(str, Enum):
    BY_SRC = "by_src"
    BY_DST = "by_dst"
    BY_EITHER = "by_either"
    BY_RULE = "by_rule"
    BY_BOTH = "by_both"


class ThresholdType(str, Enum):
    LIMIT = "limit"
    """Alert on the first ``count`` events of each ``seconds`` interval."""
    THRESHOLD = "threshold"
    """Alert on every ``count``-th event within the interval."""
    BOTH = "both"
    """Alert once per interval, on the ``count``-th event."""


class SuppressReason(str, Enum):
    """Why an alert was not emitted (a closed set: it is a metric label)."""

    SUPPRESS = "suppress"
    THRESHOLD = "threshold"
    WHITELIST = "whitelist"


_SUPPRESS_TRACKS = (Track.BY_SRC, Track.BY_DST, Track.BY_EITHER)
_THRESHOLD_TRACKS = (Track.BY_SRC, Track.BY_DST, Track.BY_RULE, Track.BY_BOTH)


@dataclass(frozen=True)
class IpSpec:
    """An address set: IPs and CIDRs, ``[a, b]`` lists, ``!`` negation, ``any``.

    >>> spec = IpSpec.parse("[10.0.0.0/8, !10.9.9.9]")
    >>> spec.matches("10.1.2.3"), spec.matches("10.9.9.9"), spec.matches("192.0.2.1")
    (True, False, False)
    """

    include: tuple[Network, ...]
    exclude: tuple[Network, ...]

    @classmethod
    def parse(cls, text: str) -> IpSpec:
        body = text.strip()
        if body.startswith("[") != body.endswith("]"):
            raise ValueError(f"unbalanced brackets in {text!r}")
        items = [i.strip() for i in body.strip("[]").split(",") if i.strip()] if body else []
        if not items:
            raise ValueError("empty address list")
        include: list[Network] = []
        exclude: list[Network] = []
        for item in items:
            neg = item.startswith("!")
            value = item[1:].strip() if neg else item
            if value.startswith("$"):
                raise ValueError(f"address variables such as {value} are not supported; write the networks")
            nets = (
                [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
                if value == "any"
                else [ipaddress.ip_network(value, strict=False)]
            )
            (exclude if neg else include).extend(nets)
        if not include:
            include = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
        return cls(tuple(include), tuple(exclude))

    def matches(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr in n for n in self.include) and not any(addr in n for n in self.exclude)

    def matches_track(self, track: Track, src: str, dst: str) -> bool:
        if track is Track.BY_SRC:
            return self.matches(src)
        if track is Track.BY_DST:
            return self.matches(dst)
        return self.matches(src) or self.matches(dst)


@dataclass(frozen=True)
class SuppressRule:
    gid: int
    sid: int
    track: Track | None
    ips: IpSpec | None
    line: int

    def applies(self, gid: int, sid: int, src: str, dst: str) -> bool:
        if self.gid not in (0, gid) or self.sid not in (0, sid):
            return False
        return self.track is None or self.ips is None or self.ips.matches_track(self.track, src, dst)


@dataclass(frozen=True)
class ThresholdRule:
    gid: int
    sid: int
    type: ThresholdType
    track: Track
    count: int
    seconds: int
    line: int


@dataclass(frozen=True)
class PassNet:
    ips: IpSpec
    track: Track
    line: int


@dataclass(frozen=True)
class ThresholdConfig:
    """A parsed ``threshold.config``."""

    suppress: tuple[SuppressRule, ...] = ()
    thresholds: tuple[ThresholdRule, ...] = ()
    passes: tuple[PassNet, ...] = ()


def _split_options(text: str) -> list[str]:
    """Split on commas outside brackets."""
    return [p.strip() for p in re.split(r",(?![^\[]*\])", text) if p.strip()]


def _options(parts: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in parts:
        name, _, value = part.partition(" ")
        if name not in allowed:
            raise ValueError(f"unknown option {name!r} (valid: {', '.join(allowed)})")
        if name in out:
            raise ValueError(f"option {name!r} given twice")
        if not value.strip():
            raise ValueError(f"option {name!r} has no value")
        out[name] = value.strip()
    return out


def _int(opts: dict[str, str], name: str, low: int) -> int:
    if name not in opts:
        raise ValueError(f"missing {name}")
    if not re.fullmatch(r"\d+", opts[name]) or int(opts[name]) < low:
        raise ValueError(f"{name} must be an integer >= {low}, not {opts[name]!r}")
    return int(opts[name])


def _enum(opts: dict[str, str], name: str, valid: tuple[Enum, ...]) -> Enum:
    if name not in opts:
        raise ValueError(f"missing {name}")
    for member in valid:
        if member.value == opts[name]:
            return member
    raise ValueError(f"{name} {opts[name]!r} is not valid here (valid: {', '.join(str(v.value) for v in valid)})")


def _suppress(rest: str, line: int) -> SuppressRule:
    opts = _options(_split_options(rest), ("gen_id", "sig_id", "track", "ip"))
    if ("track" in opts) != ("ip" in opts):
        raise ValueError("track and ip go together (both or neither)")
    track = _enum(opts, "track", _SUPPRESS_TRACKS) if "track" in opts else None
    ips = IpSpec.parse(opts["ip"]) if "ip" in opts else None
    return SuppressRule(_int(opts, "gen_id", 0), _int(opts, "sig_id", 0), track, ips, line)  # type: ignore[arg-type]


def _threshold(rest: str, line: int) -> ThresholdRule:
    opts = _options(_split_options(rest), ("gen_id", "sig_id", "type", "track", "count", "seconds"))
    kind = _enum(opts, "type", tuple(ThresholdType))
    track = _enum(opts, "track", _THRESHOLD_TRACKS)
    gid, sid = _int(opts, "gen_id", 0), _int(opts, "sig_id", 0)
    return ThresholdRule(gid, sid, kind, track, _int(opts, "count", 1), _int(opts, "seconds", 1), line)  # type: ignore[arg-type]


def _pass_net(rest: str, line: int) -> PassNet:
    parts = _split_options(rest)
    if not parts:
        raise ValueError("pass-net needs an address, a network or a [list]")
    spec = parts[0].removeprefix("ip ").strip()
    opts = _options(parts[1:], ("track",))
    track = _enum(opts, "track", _SUPPRESS_TRACKS) if opts else Track.BY_EITHER
    return PassNet(IpSpec.parse(spec), track, line)  # type: ignore[arg-type]


def parse_threshold_config(text: str, source: str = "threshold.config") -> ThresholdConfig:
    """Parse the file's text; raise :class:`ConfigError` naming ``source:line`` and the problem."""
    sup: list[SuppressRule] = []
    thr: dict[tuple[int, int], ThresholdRule] = {}
    nets: list[PassNet] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0].strip()
        if not body:
            continue
        keyword, _, rest = body.partition(" ")
        try:
            if keyword == "suppress":
                sup.append(_suppress(rest, n))
            elif keyword in ("threshold", "event_filter"):
                rule = _threshold(rest, n)
                if (rule.gid, rule.sid) in thr:
                    first = thr[(rule.gid, rule.sid)].line
                    raise ValueError(
                        f"a second threshold for gen_id {rule.gid}, sig_id {rule.sid} (first on line {first})"
                    )
                thr[(rule.gid, rule.sid)] = rule
            elif keyword == "pass-net":
                nets.append(_pass_net(rest, n))
            elif keyword == "rate_filter":
                raise ValueError("rate_filter is not supported: tapwatch watches a tap and never drops traffic")
            else:
                raise ValueError(f"unknown keyword {keyword!r} (valid: suppress, threshold, event_filter, pass-net)")
        except ValueError as err:
            raise ConfigError(f"{source}:{n}", f"{err}: {body!r}") from err
    return ThresholdConfig(tuple(sup), tuple(thr.values()), tuple(nets))


def load_threshold_config(path: str | Path) -> ThresholdConfig:
    """Read and parse a file; a missing or unreadable file is a :class:`ConfigError` too."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(str(path), f"cannot read the threshold file: {err.strerror or err}") from err
    return parse_threshold_config(text, str(path))


class Suppressor:
    """Decide whether an alert is whitelisted, suppressed or over a threshold.

    Parameters
    ----------
    config
        The parsed rules.
    max_entries
        Cap on tracked (signature, address) entries; the least recently used one is evicted beyond it, so a
        scan from many sources cannot grow memory (an evicted entry starts counting afresh).
    on_evict
        Called once per evicted entry (the alerter counts them).

    Example
    -------
    >>> s = Suppressor(parse_threshold_config("pass-net 192.168.0.0/16"))
    >>> s.check(1, 9101006, "192.168.1.5", "10.0.0.1", 0)
    <SuppressReason.WHITELIST: 'whitelist'>
    """

    def __init__(
        self, config: ThresholdConfig, max_entries: int = 100_000, on_evict: Callable[[], None] | None = None
    ) -> None:
        if max_entries < 1:
            raise ConfigError("threshold_max_entries", f"must be >= 1, not {max_entries}")
        self.config = config
        self.max_entries = max_entries
        self._on_evict = on_evict
        self._thresholds = {(r.gid, r.sid): r for r in config.thresholds}
        self._state: OrderedDict[tuple[int, int, str, str], list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._state)

    def check(self, gid: int, sid: int, src: str, dst: str, ts_ms: int) -> SuppressReason | None:
        """None to emit the alert, else the reason it is dropped (state advances on every call)."""
        if any(p.ips.matches_track(p.track, src, dst) for p in self.config.passes):
            return SuppressReason.WHITELIST
        if any(r.applies(gid, sid, src, dst) for r in self.config.suppress):
            return SuppressReason.SUPPRESS
        rule = self._thresholds.get((gid, sid)) or self._thresholds.get((gid, 0)) or self._thresholds.get((0, 0))
        if rule is not None and not self._allow(rule, (gid, sid, *_track_key(rule.track, src, dst)), ts_ms):
            return SuppressReason.THRESHOLD
        return None

    def _allow(self, rule: ThresholdRule, key: tuple[int, int, str, str], ts_ms: int) -> bool:
        """Suricata's ``detect-engine-threshold.c`` semantics for limit, threshold and both."""
        entry = self._state.get(key)
        if entry is None:
            self._state[key] = [ts_ms, 1]
            if len(self._state) > self.max_entries:
                self._state.popitem(last=False)
                if self._on_evict is not None:
                    self._on_evict()
            return rule.type is ThresholdType.LIMIT or rule.count == 1
        self._state.move_to_end(key)
        if ts_ms - entry[0] >= rule.seconds * 1000:  # a new interval starts with this event
            entry[0], entry[1] = ts_ms, 1
            return rule.type is ThresholdType.LIMIT or rule.count == 1
        entry[1] += 1
        if rule.type is ThresholdType.LIMIT:
            return entry[1] <= rule.count
        if rule.type is ThresholdType.THRESHOLD:
            if entry[1] >= rule.count:
                entry[1] = 0
                return True
            return False
        return entry[1] == rule.count


def _track_key(track: Track, src: str, dst: str) -> tuple[str, str]:
    if track is Track.BY_SRC:
        return src, ""
    if track is Track.BY_DST:
        return "", dst
    if track is Track.BY_BOTH:
        return src, dst
    return "", ""
