"""Row reproduction: packets inferred from single rows of the corrected CIC-IDS2017 subset, read by the sensor.

Each case names one row of ``../shared/datasets/cic-ids2017/engelen_improved_sample_rnd5000`` (file, ``id``,
``Flow ID``, ``Timestamp``, label; the row is read from the gzip CSV at run time) and lists the packets the
row implies, using CICFlowMeter's rules (``BasicFlow`` / ``FlowGenerator``): lengths are TCP/UDP payload
bytes, header lengths the TCP data offset × 4 (so TCP options give 24/32/40) or 8 for UDP, ``FWD Init Win
Bytes`` is the first packet's window, fwd is the direction of the first packet. The sensor must emit one
flow equal to the row at its own resolution, i.e. to ``quantize_row(row)`` for all 82 features, with one
documented exception:

* Resolution. The mean or std of 2+ gaps measured in whole milliseconds is in general not a whole number
  of milliseconds, so ``quantize_row`` (which rounds it to one) cannot be the sensor's value for it. For
  those the expected value is computed from the packets on the sensor's clock and must lie within 1 ms of
  ``quantize_row``; :func:`test_packets_are_the_rows` checks the µs timeline itself against the row. A
  duration or a gap from the first packet rounds exactly; other gaps (max, min) can round 1 ms apart from
  ``quantize_row``, so the SSH timeline below was chosen to round consistently.

Where the CICFlowMeter build that wrote the subset departs from the reference Java, the sensor follows the
subset, because models learn from it; these rows pin that down: ``Fwd Act Data Pkts`` leaves out the first
packet (DNS row: 0), ``Bwd Init Win Bytes`` is the last backward packet's window (SSH row: 247, not the
SYN-ACK's 28960), and packets after a RST stay in the flow until a SYN or the flow timeout (the two
Infiltration-Portscan rows with two RST-ACKs).

Subflow columns: in this subset they are ``floor(total / packets)`` on every row (that build's
``detectUpdateSubflows`` tests ``(ts - (sfLastPacketTS)/(double)1000000) > 1.0``, true for every packet,
and divides longs), which the public gap-based code never produces. Until commit a9d038e the sensor used the
gap rule and only rows whose Subflow columns are all 0 (2-packet flows without payload) were usable; it now
divides as the subset does, so no row is avoided for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.resolution import quantize_row
from tests.support.rowkit import (
    BWD,
    FWD,
    Pkt,
    RowRef,
    iat_features,
    load_row,
    mismatches,
    multi_gap_time_stats,
    packet_totals,
    row_features,
    run_sensor,
    write_pcap,
)


@dataclass(frozen=True)
class Case:
    """A row and its inferred packets."""

    ref: RowRef
    packets: tuple[Pkt, ...]


def syn_probe(at_us: int) -> Pkt:
    """nmap's SYN probe: one MSS option (TCP header 24 bytes), window 1024."""
    return Pkt(at_us, FWD, "S", header=24, window=1024)


# (a) Portscan: SYN with MSS option (Fwd Header Length 24, window 1024), answered 49 µs later by RST-ACK
# (20-byte header, window 0). 49 µs rounds to 0 ms: duration 0, so the rates are -1 / 0 at the sensor.
PORTSCAN = Case(
    RowRef("Portscan_5000.csv.gz", 337204, "172.16.0.1-192.168.10.50-55191-4005-6", "2017-07-07 17:51:49.618008",
           "Portscan"),
    (syn_probe(0), Pkt(49, BWD, "RA")),
)  # fmt: skip

# (b) SSH-Patator, the smallest whole session (the one smaller row, id 113198, is the tail of a timed-out
# connection: no SYN, Total TCP Flow Time 3.39e9 µs): 10 + 10 packets, no FIN (cut when the attack
# stopped; the sensor flushes it at the end of the pcap).
# Sizes: fwd sum 1128 and std 203.802083 give a sum of squares of 501056; 6 data packets (Fwd Act Data
# Pkts 6, 6 fwd PSH): 640 plus five summing to 488 with squares 91456 (447 integer solutions;
# [16, 24, 64, 112, 272] fits SSH: NEWKEYS, paramiko banner, DH group14 KEXDH_INIT, two encrypted
# requests). Bwd: 5 PSH packets, 976 plus four summing to 1033 with squares 731281: only [14, 56, 118, 845]
# or [41, 64, 80, 848]; 41 is the OpenSSH 7.2p2 Ubuntu banner. Headers 40 (SYN) + 9 x 32 per side; 19 ACKs.
# Times: Flow IAT Max = Bwd IAT Max, so the 1.5 s wait lies between two bwd packets (ACK of the password,
# USERAUTH_FAILURE). The 19 gaps were solved for offline so that the Flow/Fwd/Bwd IAT mean, std (to 1e-9),
# max, min and totals equal the row's and the max/min/totals also round consistently to ms.
_SSH = [
    (0, FWD, "S", 0, 29200), (60, BWD, "SA", 0, 28960), (3005, FWD, "A", 0, 229),
    (3339, BWD, "PA", 41, 247),  # server banner
    (3399, FWD, "PA", 24, 229),  # client banner
    (10690, BWD, "A", 0, 247),
    (19626, FWD, "PA", 640, 229),  # KEXINIT
    (22607, BWD, "PA", 976, 247),  # KEXINIT
    (23122, FWD, "PA", 272, 229),  # KEXDH_INIT
    (27238, BWD, "PA", 848, 247),  # KEXDH_REPLY, NEWKEYS
    (28697, FWD, "PA", 16, 229),  # NEWKEYS
    (30503, FWD, "PA", 64, 229),  # SERVICE_REQUEST
    (46699, BWD, "A", 0, 247),
    (46810, BWD, "PA", 64, 247),  # SERVICE_ACCEPT
    (63883, FWD, "PA", 112, 229),  # USERAUTH_REQUEST (password)
    (124499, BWD, "A", 0, 247),
    (1620332, BWD, "PA", 80, 247),  # USERAUTH_FAILURE after the 1.5 s penalty
    (1641500, FWD, "A", 0, 229), (1648738, BWD, "A", 0, 247), (1688206, FWD, "A", 0, 229),
]  # fmt: skip
SSH_PATATOR = Case(
    RowRef("SSH-Patator_2961.csv.gz", 79302, "172.16.0.1-192.168.10.50-52040-22-6", "2017-07-04 18:07:05.366967",
           "SSH-Patator"),
    tuple(Pkt(t, d, f, n, 40 if "S" in f else 32, w) for t, d, f, n, w in _SSH),
)  # fmt: skip

# (c) Benign DNS over UDP: one 62-byte query to port 53, one 112-byte answer 23081 µs later.
DNS = Case(
    RowRef("BENIGN_5000.csv.gz", 66239, "192.168.10.3-192.168.10.1-61782-53-17", "2017-07-07 17:36:04.177262",
           "BENIGN"),
    (Pkt(0, FWD, payload=62), Pkt(23081, BWD, payload=112)),
)  # fmt: skip

# ICMP echo request (type 8 code 0) and its reply 18 µs later: ICMP Type/Code are the first packet's; the
# reply stays in the flow (FlowGenerator splits an ICMP flow only when type and code both differ).
ICMP_ECHO = Case(
    RowRef("Portscan_5000.csv.gz", 75857, "192.168.10.50-172.16.0.1-0-0-1", "2017-07-07 18:14:12.568296",
           "Portscan"),
    (Pkt(0, FWD, icmp=(8, 0)), Pkt(18, BWD, icmp=(0, 0))),
)  # fmt: skip

# Three ICMP port-unreachable messages (type 3 code 3), 1515758 and 1623847 µs apart: two gaps, so the IAT
# means and stds are the sensor's own (resolution exception above); gaps < 5 s, so no idle period.
ICMP_UNREACHABLE = Case(
    RowRef("BENIGN_5000.csv.gz", 371153, "192.168.10.1-192.168.10.3-0-0-1", "2017-07-07 16:52:53.551447",
           "BENIGN"),
    tuple(Pkt(t, FWD, icmp=(3, 3)) for t in (0, 1515758, 3139605)),
)  # fmt: skip

# Infiltration - Portscan: two SYN probes 49 µs apart to a port that never answers (2,160 of 5,000 rows).
INFILTRATION_2SYN = Case(
    RowRef("Infiltration_-_Portscan_5000.csv.gz", 207492, "192.168.10.8-192.168.10.5-53852-1071-6",
           "2017-07-06 18:33:31.417420", "Infiltration - Portscan"),
    (syn_probe(0), syn_probe(49)),
)  # fmt: skip

# Infiltration - Portscan with packets after the first RST (Bwd RST Flags 2): a SYN answered by two RST-ACKs
# (bwd IAT 2 µs), and two SYNs answered by two RST-ACKs (fwd IAT 1, bwd IAT 49: SYN, SYN, RST, RST). 1,711
# of the 5,000 rows of this class (and 2,719 DoS Hulk, 3,952 FTP-Patator rows) have 2+ RSTs.
INFILTRATION_RST_RST = Case(
    RowRef("Infiltration_-_Portscan_5000.csv.gz", 69354, "192.168.10.8-192.168.10.25-49846-1037-6",
           "2017-07-06 18:13:28.356053", "Infiltration - Portscan"),
    (syn_probe(0), Pkt(38, BWD, "RA"), Pkt(40, BWD, "RA")),
)  # fmt: skip
INFILTRATION_2SYN_2RST = Case(
    RowRef("Infiltration_-_Portscan_5000.csv.gz", 262448, "192.168.10.8-192.168.10.12-53466-5566-6",
           "2017-07-06 18:08:55.769937", "Infiltration - Portscan"),
    (syn_probe(0), syn_probe(1), Pkt(6, BWD, "RA"), Pkt(55, BWD, "RA")),
)  # fmt: skip

CASES = [
    pytest.param(PORTSCAN, id="portscan-syn-rstack"),
    pytest.param(SSH_PATATOR, id="ssh-patator"),
    pytest.param(DNS, id="benign-dns"),
    pytest.param(ICMP_ECHO, id="portscan-icmp-echo"),
    pytest.param(ICMP_UNREACHABLE, id="benign-icmp-unreachable"),
    pytest.param(INFILTRATION_2SYN, id="infiltration-portscan-2syn"),
    pytest.param(INFILTRATION_RST_RST, id="infiltration-portscan-syn-rst-rst"),
    pytest.param(INFILTRATION_2SYN_2RST, id="infiltration-portscan-2syn-2rst"),
]


def sensor_flow(case: Case, tmp_path: Path) -> dict[str, float]:
    """The features of the one flow the sensor emits for the case's packets."""
    pcap = write_pcap(tmp_path / "row.pcap", load_row(case.ref), case.packets)
    flows = run_sensor(pcap)
    assert len(flows) == 1, f"{case.ref}: the sensor emitted {len(flows)} flows"
    return flows[0]


def expected_at_sensor(case: Case) -> dict[str, float]:
    """``quantize_row(row)``, with the IAT means/stds of 2+ gaps measured on the sensor's clock."""
    quantized: dict[str, float] = quantize_row(row_features(load_row(case.ref)))
    own = multi_gap_time_stats(case.packets)
    off = {n: (v, quantized[n]) for n, v in own.items() if abs(v - quantized[n]) >= 1000}
    assert not off, f"{case.ref}: sensor-clock statistic more than 1 ms from quantize_row: {off}"
    return quantized | own


@pytest.mark.parametrize("case", [p.values[0] for p in CASES], ids=[p.id for p in CASES])
def test_packets_are_the_rows(case: Case) -> None:
    """The inferred packets give the row's counts, lengths, headers, flags, first window and µs timing."""
    row = row_features(load_row(case.ref))
    derived = packet_totals(case.packets, int(row["Protocol"])) | iat_features(case.packets, "us")
    wrong = mismatches(derived, row, derived)
    assert not wrong, f"{case.ref}: packet list disagrees with the row:\n" + "\n".join(wrong)


@pytest.mark.parametrize("case", CASES)
def test_row_reproduced(case: Case, tmp_path: Path) -> None:
    """One flow whose 82 features equal the row at the sensor's resolution."""
    got = sensor_flow(case, tmp_path)
    expected = expected_at_sensor(case)
    wrong = mismatches(got, expected, FEATURE_NAMES)
    assert not wrong, f"{case.ref}:\n" + "\n".join(wrong)
