"""threshold.config parsing and Suricata's suppress/threshold semantics, plus pass-net whitelists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapwatch.alerting.suppress import (
    Suppressor,
    SuppressReason,
    ThresholdType,
    Track,
    load_threshold_config,
    parse_threshold_config,
)
from tapwatch.features.errors import ConfigError

SID = 9_101_005
A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
VICTIM, OTHER = "172.16.0.10", "172.16.0.11"


def run(rule: str, events: list[tuple[str, str, float]], sid: int = SID) -> list[bool]:
    """Emit decisions (True = alert) for events (src, dst, seconds)."""
    s = Suppressor(parse_threshold_config(rule))
    return [s.check(1, sid, src, dst, int(t * 1000)) is None for src, dst, t in events]


def test_parses_the_vocabulary(tmp_path: Path) -> None:
    f = tmp_path / "threshold.config"
    f.write_text(
        "# comment\n\n"
        "suppress gen_id 1, sig_id 9101006\n"
        "suppress gen_id 1, sig_id 0, track by_either, ip [10.0.0.0/8, !10.9.9.9, 2001:db8::/32]  # trailing\n"
        "threshold gen_id 1, sig_id 9101005, type both, track by_dst, count 5, seconds 60\n"
        "event_filter gen_id 1, sig_id 9101001, type limit, track by_rule, count 1, seconds 10\n"
        "pass-net 192.168.0.0/16\n"
        "pass-net [10.1.2.3, 10.1.2.4], track by_src\n"
    )
    cfg = load_threshold_config(f)
    assert len(cfg.suppress) == 2 and len(cfg.thresholds) == 2 and len(cfg.passes) == 2
    t = cfg.thresholds[0]
    assert (t.sid, t.type, t.track, t.count, t.seconds, t.line) == (SID, ThresholdType.BOTH, Track.BY_DST, 5, 60, 5)
    assert cfg.suppress[1].ips is not None and cfg.suppress[1].ips.matches("2001:db8::1")
    assert cfg.passes[1].track is Track.BY_SRC


@pytest.mark.parametrize(
    "line,words",
    [
        ("supress gen_id 1, sig_id 1", "unknown keyword 'supress'"),
        ("suppress gen_id 1, sig_id 1, track by_src", "track and ip go together"),
        ("suppress gen_id 1, sig_id 1, track by_src, ip 10.0.0.0/33", "10.0.0.0/33"),
        ("suppress gen_id 1, sig_id 1, track by_src, ip $HOME_NET", "variables"),
        ("suppress gen_id 1, sig_id 1, track by_rule, ip 10.0.0.1", "by_rule"),
        ("threshold gen_id 1, sig_id 1, type limit, track by_src, seconds 60", "missing count"),
        ("threshold gen_id 1, sig_id 1, type limit, track by_src, count 0, seconds 60", "count must be"),
        ("threshold gen_id 1, sig_id 1, type often, track by_src, count 1, seconds 60", "type 'often'"),
        ("threshold gen_id 1, sig_id 1, type limit, track by_either, count 1, seconds 60", "by_either"),
        ("threshold gen_id 1, sig_id x, type limit, track by_src, count 1, seconds 60", "sig_id must be"),
        ("threshold gen_id 1, sig_id 1, type limit, track by_src, count 1, seconds 6, color red", "'color'"),
        ("rate_filter gen_id 1, sig_id 1, track by_src, count 1, seconds 6", "not supported"),
        ("pass-net", "needs an address"),
        ("pass-net 300.1.1.1", "300.1.1.1"),
    ],
)
def test_errors_name_file_line_and_problem(line: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_threshold_config(f"# first line\n{line}\n", "t.conf")
    assert err.value.subject == "t.conf:2"
    assert words in str(err.value)


def test_a_second_threshold_for_one_signature_is_an_error() -> None:
    rule = "threshold gen_id 1, sig_id 5, type limit, track by_src, count 1, seconds 60\n"
    with pytest.raises(ConfigError, match=r"first on line 1") as err:
        parse_threshold_config(rule + rule)
    assert err.value.subject.endswith(":2")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_threshold_config(tmp_path / "nope.config")


LIMIT = f"threshold gen_id 1, sig_id {SID}, type limit, track by_src, count 2, seconds 60"


def test_limit_alerts_on_the_first_count_per_interval() -> None:
    times = [0, 1, 2, 30, 59.9, 60, 61, 62, 125]
    got = run(LIMIT, [(A, VICTIM, t) for t in times])
    assert got == [True, True, False, False, False, True, True, False, True]


def test_threshold_alerts_on_every_countth_event() -> None:
    rule = f"threshold gen_id 1, sig_id {SID}, type threshold, track by_src, count 3, seconds 60"
    got = run(rule, [(A, VICTIM, t) for t in range(8)] + [(A, VICTIM, 100), (A, VICTIM, 101), (A, VICTIM, 102)])
    assert got == [False, False, True, False, False, True, False, False, False, False, True]


def test_both_alerts_once_per_interval_after_count() -> None:
    rule = f"threshold gen_id 1, sig_id {SID}, type both, track by_src, count 3, seconds 60"
    got = run(rule, [(A, VICTIM, t) for t in (0, 1, 2, 3, 4, 5)] + [(A, VICTIM, t) for t in (70, 71, 72)])
    assert got == [False, False, True, False, False, False, False, False, True]


def test_by_src_tracks_each_source_by_dst_each_target() -> None:
    by_src = LIMIT.replace("count 2", "count 1")
    by_dst = by_src.replace("by_src", "by_dst")
    events = [(A, VICTIM, 0), (B, VICTIM, 1), (A, OTHER, 2), (C, OTHER, 3)]
    assert run(by_src, events) == [True, True, False, True]
    assert run(by_dst, events) == [True, False, True, False]


def test_by_rule_and_by_both() -> None:
    by_rule = LIMIT.replace("by_src", "by_rule").replace("count 2", "count 1")
    by_both = by_rule.replace("by_rule", "by_both")
    events = [(A, VICTIM, 0), (B, VICTIM, 1), (A, VICTIM, 2), (A, OTHER, 3)]
    assert run(by_rule, events) == [True, False, False, False]
    assert run(by_both, events) == [True, True, False, True]


def test_threshold_applies_to_its_signature_only_and_sid_0_to_all() -> None:
    s = Suppressor(parse_threshold_config(LIMIT.replace("count 2", "count 1")))
    assert [s.check(1, SID, A, B, t) for t in (0, 1)] == [None, SuppressReason.THRESHOLD]
    assert [s.check(1, SID + 1, A, B, t) for t in (0, 1)] == [None, None]
    glob = LIMIT.replace(f"sig_id {SID}", "sig_id 0").replace("count 2", "count 1")
    s = Suppressor(parse_threshold_config(glob))
    assert [s.check(1, sid, A, B, 0) for sid in (SID, SID + 1, SID)] == [None, None, SuppressReason.THRESHOLD]


def test_specific_threshold_wins_over_the_global_one() -> None:
    text = (LIMIT.replace(f"sig_id {SID}", "sig_id 0").replace("count 2", "count 1") + "\n" +
            LIMIT.replace("count 2", "count 3"))  # fmt: skip
    got = run(text, [(A, B, t) for t in range(4)])
    assert got == [True, True, True, False]


@pytest.mark.parametrize(
    "track,src,dst,suppressed",
    [("by_src", A, VICTIM, True), ("by_src", VICTIM, A, False), ("by_dst", VICTIM, A, True),
     ("by_dst", A, VICTIM, False), ("by_either", A, VICTIM, True), ("by_either", VICTIM, A, True),
     ("by_either", VICTIM, OTHER, False), ("by_src", "10.9.9.9", VICTIM, False)],
)  # fmt: skip
def test_suppress_by_track_with_cidr_and_negation(track: str, src: str, dst: str, suppressed: bool) -> None:
    rule = f"suppress gen_id 1, sig_id {SID}, track {track}, ip [10.0.0.0/8, !10.9.9.9]"
    s = Suppressor(parse_threshold_config(rule))
    assert (s.check(1, SID, src, dst, 0) is SuppressReason.SUPPRESS) is suppressed
    assert s.check(1, SID + 1, src, dst, 0) is None


def test_suppress_without_track_drops_the_whole_signature() -> None:
    s = Suppressor(parse_threshold_config(f"suppress gen_id 1, sig_id {SID}"))
    assert s.check(1, SID, A, B, 0) is SuppressReason.SUPPRESS
    assert s.check(1, SID + 1, A, B, 0) is None


def test_pass_net_whitelists_before_anything_else() -> None:
    s = Suppressor(parse_threshold_config(f"pass-net 192.168.0.0/16\nsuppress gen_id 1, sig_id {SID}\n"
                                          "pass-net 2001:db8::/32, track by_dst"))  # fmt: skip
    assert s.check(1, SID, "192.168.3.4", B, 0) is SuppressReason.WHITELIST
    assert s.check(1, 7, A, "192.168.3.4", 0) is SuppressReason.WHITELIST
    assert s.check(1, 7, "2001:db8::1", "2001:db9::1", 0) is None
    assert s.check(1, 7, "2001:db9::1", "2001:db8::1", 0) is SuppressReason.WHITELIST
    assert s.check(1, SID, A, B, 0) is SuppressReason.SUPPRESS


def test_state_is_bounded_lru_and_evictions_are_counted() -> None:
    evicted: list[int] = []
    s = Suppressor(parse_threshold_config(LIMIT.replace("count 2", "count 1")), max_entries=3,
                   on_evict=lambda: evicted.append(1))  # fmt: skip
    for i in range(10):
        assert s.check(1, SID, f"10.1.0.{i}", B, 0) is None
    assert len(s) == 3 and len(evicted) == 7
    assert s.check(1, SID, "10.1.0.9", B, 1) is SuppressReason.THRESHOLD  # recent: still tracked
    assert s.check(1, SID, "10.1.0.0", B, 1) is None  # evicted: counts afresh


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="threshold_max_entries"):
        Suppressor(parse_threshold_config(""), max_entries=0)
