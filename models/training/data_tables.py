"""Loaders of the flat datasets: UNSW-NB15 (testing partition), ToN-IoT (network train/test), NSL-KDD.

None of them has a usable time or host order (EVALUATION.md): models see each flow alone (T = 1).

>>> normalize_unsw_label(" Backdoors"), normalize_ton_label("DDoS "), normalize_kdd_label("normal.")
('Backdoor', 'ddos', 'normal')
>>> KDD_FAMILIES["neptune"], KDD_FAMILIES["satan"]
('DoS', 'Probe')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tapwatch.features.errors import BadInputError
from tapwatch.models.training.data_common import (
    Dataset,
    Dedupe,
    Encoding,
    FileInfo,
    Parts,
    apply_encodings,
    check_columns,
    clean_numeric,
    count_exact_duplicates,
    default_root,
    describe_encodings,
    expected_digests,
    finish,
    fit_encodings,
    read_table,
)

UNSW_COLUMNS: tuple[str, ...] = (
    "id", "dur", "proto", "service", "state", "spkts", "dpkts", "sbytes", "dbytes", "rate", "sttl", "dttl", "sload",
    "dload", "sloss", "dloss", "sinpkt", "dinpkt", "sjit", "djit", "swin", "stcpb", "dtcpb", "dwin", "tcprtt", "synack",
    "ackdat", "smean", "dmean", "trans_depth", "response_body_len", "ct_srv_src", "ct_state_ttl", "ct_dst_ltm",
    "ct_src_dport_ltm", "ct_dst_sport_ltm", "ct_dst_src_ltm", "is_ftp_login", "ct_ftp_cmd", "ct_flw_http_mthd",
    "ct_src_ltm", "ct_srv_dst", "is_sm_ips_ports", "attack_cat", "label",
)  # fmt: skip
UNSW_TTL_FEATURES: tuple[str, ...] = ("sttl", "dttl", "ct_state_ttl")
"""TTL-derived UNSW-NB15 features; they separate the classes through the testbed's TTLs (label leak)."""
UNSW_CLASSES: tuple[str, ...] = (
    "Normal", "Analysis", "Backdoor", "DoS", "Exploits", "Fuzzers", "Generic", "Reconnaissance", "Shellcode", "Worms",
)  # fmt: skip

TON_COLUMNS: tuple[str, ...] = (
    "src_ip", "src_port", "dst_ip", "dst_port", "proto", "service", "duration", "src_bytes", "dst_bytes", "conn_state",
    "missed_bytes", "src_pkts", "src_ip_bytes", "dst_pkts", "dst_ip_bytes", "dns_query", "dns_qclass", "dns_qtype",
    "dns_rcode", "dns_AA", "dns_RD", "dns_RA", "dns_rejected", "ssl_version", "ssl_cipher", "ssl_resumed",
    "ssl_established", "ssl_subject", "ssl_issuer", "http_trans_depth", "http_method", "http_uri", "http_version",
    "http_request_body_len", "http_response_body_len", "http_status_code", "http_user_agent", "http_orig_mime_types",
    "http_resp_mime_types", "weird_name", "weird_addl", "weird_notice", "label", "type",
)  # fmt: skip
TON_CATEGORICAL: tuple[str, ...] = (
    "proto", "service", "conn_state", "dns_AA", "dns_RD", "dns_RA", "dns_rejected", "ssl_version", "ssl_cipher",
    "ssl_resumed", "ssl_established", "http_method", "http_version", "http_orig_mime_types", "http_resp_mime_types",
    "weird_name", "weird_notice",
)  # fmt: skip
TON_FREE_TEXT: tuple[str, ...] = ("dns_query", "ssl_subject", "ssl_issuer", "http_uri", "http_user_agent")
"""Names, URIs and certificate subjects: endpoint identifiers in all but name (726 DNS names), not features."""
TON_CLASSES: tuple[str, ...] = (
    "normal", "backdoor", "ddos", "dos", "injection", "mitm", "password", "ransomware", "scanning", "xss",
)  # fmt: skip

KDD_FEATURES: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land", "wrong_fragment", "urgent",
    "hot", "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted", "num_root",
    "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login",
    "count", "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate", "same_srv_rate",
    "diff_srv_rate", "srv_diff_host_rate", "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate",
    "dst_host_diff_srv_rate", "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
)  # fmt: skip
KDD_COLUMNS: tuple[str, ...] = (*KDD_FEATURES, "label", "difficulty")
KDD_PARTS: tuple[str, ...] = ("KDDTrain+", "KDDTest+")
_FAMILY_MEMBERS = {
    "DoS": "apache2 back land mailbomb neptune pod processtable smurf teardrop udpstorm worm",
    "Probe": "ipsweep mscan nmap portsweep saint satan",
    "R2L": "ftp_write guess_passwd httptunnel imap multihop named phf sendmail snmpgetattack snmpguess spy "
    "warezclient warezmaster xlock xsnoop",
    "U2R": "buffer_overflow loadmodule perl ps rootkit sqlattack xterm",
}
KDD_FAMILIES: dict[str, str] = {"normal": "normal"} | {
    name: family for family, names in _FAMILY_MEMBERS.items() for name in names.split()
}
"""NSL-KDD attack -> family (the usual DoS/Probe/R2L/U2R mapping; sources differ on httptunnel and worm)."""


def _lookup(known: Mapping[str, str], key: str) -> str:
    return known[key]


_UNSW_KEYS = {c.lower(): c for c in UNSW_CLASSES} | {"backdoors": "Backdoor", "nan": "Normal", "": "Normal"}


def normalize_unsw_label(raw: str) -> str:
    """``attack_cat`` in the published spelling (the raw files add spaces, ``Backdoors``, empty = Normal)."""
    return _lookup(_UNSW_KEYS, str(raw).strip().lower())


def normalize_ton_label(raw: str) -> str:
    """ToN-IoT ``type`` in lower case."""
    return _lookup({c: c for c in TON_CLASSES}, str(raw).strip().lower())


def normalize_kdd_label(raw: str) -> str:
    """NSL-KDD attack name in lower case, without KDD'99's trailing dot."""
    return _lookup({c: c for c in KDD_FAMILIES}, str(raw).strip().lower().rstrip("."))


@dataclass(frozen=True)
class TableSpec:
    """What one flat dataset looks like and which of its columns are what."""

    name: str
    folder: str
    files: tuple[str, ...]
    columns: tuple[str, ...]
    class_column: str
    benign: str
    normalize: Callable[[str], str]
    categorical: tuple[str, ...]
    dropped: Mapping[str, str] = field(default_factory=dict)
    binary_column: str | None = None
    row_id: str | None = None
    header: bool = True


def _read(spec: TableSpec, root: Path) -> tuple[pd.DataFrame, list[FileInfo], list[str]]:
    folder = root / spec.folder
    expected = expected_digests(folder)
    frames, files = [], []
    for file in spec.files:
        path = folder / f"{file}.gz" if (folder / f"{file}.gz").exists() else folder / file
        frame, info = read_table(path, expected, header=spec.header)
        if not spec.header:
            if frame.shape[1] != len(spec.columns):
                what = "the difficulty column is missing?" if frame.shape[1] == len(spec.columns) - 1 else ""
                raise BadInputError(
                    str(path), f"expected {len(spec.columns)} fields (41 features, label, difficulty), "
                    f"found {frame.shape[1]} {what}".strip()
                )  # fmt: skip
            frame.columns = list(spec.columns)
        check_columns(str(path), frame.columns, spec.columns)
        frames.append(frame[list(spec.columns)].assign(_part=Path(file).stem))
        files.append(info)
    frame = pd.concat(frames, ignore_index=True)
    return frame, files, [f"read {len(files)} file(s), {len(frame)} rows, {len(spec.columns)} columns"]


def _classes(spec: TableSpec, frame: pd.DataFrame, subject: str) -> tuple[pd.Series, list[str], dict[str, int]]:
    raw = frame[spec.class_column].astype(object).where(frame[spec.class_column].notna(), "").astype(str)
    mapping, unknown = {}, []
    for value in raw.unique():
        try:
            mapping[value] = spec.normalize(value)
        except KeyError:
            unknown.append(value)
    if unknown:
        raise BadInputError(subject, f"unknown {spec.class_column} values {sorted(unknown)}")
    y = raw.map(mapping)
    renamed = {k: v for k, v in mapping.items() if k != v}
    steps = [f"{spec.class_column} spellings normalised: {renamed}"] if renamed else []
    counts: dict[str, int] = {}
    if spec.binary_column is not None:
        given = pd.to_numeric(frame[spec.binary_column], errors="coerce").fillna(-1).astype(int)
        counts["label_mismatch"] = int((given.to_numpy() != (y != spec.benign).to_numpy()).sum())
        steps.append(
            f"binary target from the class ({spec.class_column} != {spec.benign!r}); "
            f"{counts['label_mismatch']} rows disagree with '{spec.binary_column}'"
        )
    return y, steps, counts


def _load(
    spec: TableSpec, root: Path | None, encoding: Encoding, dedupe: Dedupe, fit_part: str | None = None
) -> Dataset:
    root = root if root is not None else default_root()
    frame, files, steps = _read(spec, root)
    subject = str(root / spec.folder)
    y, class_steps, counts = _classes(spec, frame, subject)
    steps += class_steps
    exact_dup = count_exact_duplicates(frame.drop(columns="_part"), spec.row_id)
    if len(spec.files) > 1:
        within = int(count_exact_duplicates(frame, spec.row_id).sum())
        counts["exact_duplicates_within_files"] = within
        steps.append(f"{int(exact_dup.sum()) - within} rows of a later file repeat a row of an earlier one exactly")
    not_features = [spec.class_column, *([spec.binary_column] if spec.binary_column else []), *spec.dropped]
    if spec.row_id:
        not_features.append(spec.row_id)
    for col, why in spec.dropped.items():
        steps.append(f"dropped {col!r}: {why}")
    steps.append(f"dropped label columns {[c for c in (spec.class_column, spec.binary_column) if c]}")
    features = frame[[c for c in spec.columns if c not in not_features]]
    numeric, num_counts, num_steps = clean_numeric(features.drop(columns=list(spec.categorical)), subject)
    steps += num_steps
    fit_rows = frame["_part"] == fit_part if fit_part else slice(None)
    encodings = fit_encodings(features.loc[fit_rows], spec.categorical, encoding)
    combined = pd.concat([numeric, features[list(spec.categorical)]], axis=1)[features.columns]
    x, unknown = apply_encodings(combined, encodings)
    steps.append(describe_encodings(encodings) + (f"; categories from {fit_part} only" if fit_part else ""))
    if unknown:
        steps.append(f"categories unseen in {fit_part}: {unknown} rows (all-zero one-hot / code -1)")
    counts |= num_counts | {"rows_read": len(frame), "unknown_categories": sum(unknown.values())}
    meta = pd.DataFrame(index=frame.index)
    if fit_part:
        meta = pd.DataFrame({"part": frame["_part"].astype(str), "family": y.map(KDD_FAMILIES)})
    parts = Parts(spec.name, x, y, meta, spec.benign, encodings, tuple(files), exact_dup, steps, counts)
    return finish(parts, dedupe)


def load_unsw_nb15(
    root: Path | None = None,
    *,
    with_ttl: bool = True,
    encoding: Encoding = Encoding.ONEHOT,
    dedupe: Dedupe = Dedupe.NONE,
) -> Dataset:
    """UNSW-NB15 testing partition (82,332 rows): ``attack_cat`` classes, ``proto/service/state`` encoded.

    ``with_ttl=False`` also drops :data:`UNSW_TTL_FEATURES` (the dataset is then ``unsw-nb15-nottl``).
    """
    dropped = {} if with_ttl else {c: "TTL-derived feature (leaks the label)" for c in UNSW_TTL_FEATURES}
    spec = TableSpec(
        name="unsw-nb15" if with_ttl else "unsw-nb15-nottl",
        folder="unsw-nb15",
        files=("UNSW_NB15_testing-set.csv",),
        columns=UNSW_COLUMNS,
        class_column="attack_cat",
        benign="Normal",
        normalize=normalize_unsw_label,
        categorical=("proto", "service", "state"),
        dropped=dropped,
        binary_column="label",
        row_id="id",
    )
    return _load(spec, root, encoding, dedupe)


def load_ton_iot(
    root: Path | None = None, *, encoding: Encoding = Encoding.ONEHOT, dedupe: Dedupe = Dedupe.NONE
) -> Dataset:
    """ToN-IoT network train/test file (211,043 rows): ``type`` classes; IPs, ports and free text dropped."""
    dropped = {c: "identifier (IP or port)" for c in ("src_ip", "src_port", "dst_ip", "dst_port")}
    dropped |= {c: "free text naming endpoints (DNS names, URIs, certificates, user agents)" for c in TON_FREE_TEXT}
    spec = TableSpec(
        name="ton-iot",
        folder="ton-iot",
        files=("train_test_network.csv",),
        columns=TON_COLUMNS,
        class_column="type",
        benign="normal",
        normalize=normalize_ton_label,
        categorical=TON_CATEGORICAL,
        dropped=dropped,
        binary_column="label",
    )
    return _load(spec, root, encoding, dedupe)


def load_nsl_kdd(
    root: Path | None = None,
    *,
    parts: tuple[str, ...] = KDD_PARTS,
    encoding: Encoding = Encoding.ONEHOT,
    dedupe: Dedupe = Dedupe.NONE,
) -> Dataset:
    """NSL-KDD files ``parts`` (default KDDTrain+ then KDDTest+), 41 features, attack names as classes.

    ``meta["part"]`` names each row's file (the official split), ``meta["family"]`` its attack family.
    Categories of ``protocol_type/service/flag`` come from the first part only.
    """
    spec = TableSpec(
        name="nsl-kdd",
        folder="nsl-kdd",
        files=tuple(f"{p}.txt" for p in parts),
        columns=KDD_COLUMNS,
        class_column="label",
        benign="normal",
        normalize=normalize_kdd_label,
        categorical=("protocol_type", "service", "flag"),
        dropped={"difficulty": "NSL-KDD difficulty score (how many of 21 learners got the row right), not a feature"},
        header=False,
    )
    return _load(spec, root, encoding, dedupe, fit_part=parts[0])
