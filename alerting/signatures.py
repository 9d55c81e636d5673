"""Stable Suricata-style signatures for model classes: ``signature_id``, category and severity.

A SIEM rule or a ``threshold.config`` line keys on ``signature_id``, so it must not change when a model is
retrained or its card lists the classes in another order. It is therefore derived from *names*, through
the committed registries below, never from a class's position in a card:

    signature_id = 9_100_000 + family_index * 1000 + class_index (+ 500 for an "... - Attempted" label)

``family_index`` (1..89) comes from :data:`FAMILIES`, matched against the tokens of the model's name;
``class_index`` (1..499) from :data:`CLASSES`, matched against the normalised class name. A model family
or a class that is not in the registries gets a hash of both names in the reserved range
9,190,000..9,199,999 (:func:`fallback_sid`): stable, but collisions are possible there, so add the name
to the registry (append only, never renumber) when a model ships. ``docs/alerts.md`` has the tables.

>>> sig = signature_for("hybrid-cic-ids2017", "DoS Hulk")
>>> sig.sid, sig.category.value, int(sig.severity)
(9101001, 'dos', 2)
>>> signature_for("hybrid-cic-ids2017", "DoS Hulk - Attempted").sid
9101501
>>> signature_for("lunet-unsw", "Exploits").severity.name
'HIGH'
>>> 9_190_000 <= signature_for("mystery-model", "Weird").sid < 9_200_000
True
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum, IntEnum
from functools import lru_cache

SID_BASE = 9_100_000
FALLBACK_BASE = 9_190_000
FALLBACK_SIZE = 10_000
ATTEMPTED_OFFSET = 500
GID = 1
REV = 1


class Severity(IntEnum):
    """Suricata's alert severity: 1 is the highest."""

    HIGH = 1
    MEDIUM = 2
    LOW = 3


class Category(str, Enum):
    """The family of a class: it sets the EVE ``alert.category`` text and the severity."""

    COMPROMISE = "compromise"
    EXPLOIT = "exploit"
    WEB_ATTACK = "web_attack"
    CREDENTIAL = "credential"
    DOS = "dos"
    RECON = "recon"
    MISC = "misc"
    UNKNOWN = "unknown"

    @property
    def description(self) -> str:
        """Suricata ``classification.config`` wording, so existing dashboards group alerts sensibly."""
        return _CATEGORY_TEXT[self][0]

    @property
    def severity(self) -> Severity:
        return _CATEGORY_TEXT[self][1]


_CATEGORY_TEXT: dict[Category, tuple[str, Severity]] = {
    Category.COMPROMISE: ("A Network Trojan was detected", Severity.HIGH),
    Category.EXPLOIT: ("Attempted Administrator Privilege Gain", Severity.HIGH),
    Category.WEB_ATTACK: ("Web Application Attack", Severity.HIGH),
    Category.CREDENTIAL: ("Attempted User Privilege Gain", Severity.MEDIUM),
    Category.DOS: ("Detection of a Denial of Service Attack", Severity.MEDIUM),
    Category.RECON: ("Detection of a Network Scan", Severity.LOW),
    Category.MISC: ("Misc Attack", Severity.MEDIUM),
    Category.UNKNOWN: ("Potentially Bad Traffic", Severity.MEDIUM),
}

# Model families: index -> names (tokens of a model name). Append only; never renumber.
FAMILIES: dict[int, tuple[str, ...]] = {
    1: ("hybrid", "convlstm"),
    2: ("seq2seq",),
    3: ("lunet",),
    4: ("lightgbm", "lgbm", "gbm"),
    5: ("random-forest", "rf"),
    6: ("mlp",),
}

_C, _E, _W, _K, _D, _R, _M = (Category.COMPROMISE, Category.EXPLOIT, Category.WEB_ATTACK, Category.CREDENTIAL,
                              Category.DOS, Category.RECON, Category.MISC)  # fmt: skip

# Classes: index -> (category, normalised names). 1-29 CIC-IDS2017 (Engelen), 30-49 UNSW-NB15, 50-69 ToN-IoT,
# 70-149 NSL-KDD (categories and attack names), 200+ generic binary labels, 210+ the families of the models trained
# on the lab's flows (whose classes are the families). Append only; never renumber.
CLASSES: dict[int, tuple[Category, tuple[str, ...]]] = {
    1: (_D, ("dos-hulk",)), 2: (_D, ("dos-goldeneye",)), 3: (_D, ("dos-slowloris",)),
    4: (_D, ("dos-slowhttptest",)), 5: (_D, ("ddos", "ddos-loit")), 6: (_R, ("portscan", "port-scan")),
    7: (_K, ("ftp-patator",)), 8: (_K, ("ssh-patator",)), 9: (_C, ("bot", "botnet")),
    10: (_W, ("web-attack-brute-force",)), 11: (_W, ("web-attack-xss",)),
    12: (_W, ("web-attack-sql-injection", "web-attack-sqli")), 13: (_C, ("infiltration",)),
    14: (_C, ("infiltration-portscan",)), 15: (_E, ("heartbleed",)),
    30: (_M, ("generic",)), 31: (_E, ("exploits",)), 32: (_M, ("fuzzers",)), 33: (_D, ("dos",)),
    34: (_R, ("reconnaissance",)), 35: (_M, ("analysis",)), 36: (_C, ("backdoor", "backdoors")),
    37: (_E, ("shellcode",)), 38: (_C, ("worms", "worm")),
    50: (_W, ("injection",)), 51: (_K, ("password",)), 52: (_C, ("ransomware",)), 53: (_R, ("scanning",)),
    54: (_W, ("xss",)), 55: (_M, ("mitm",)),
    70: (_R, ("probe",)), 71: (_K, ("r2l",)), 72: (_E, ("u2r",)), 73: (_D, ("neptune",)), 74: (_D, ("smurf",)),
    75: (_D, ("back",)), 76: (_D, ("teardrop",)), 77: (_D, ("pod",)), 78: (_D, ("land",)), 79: (_R, ("satan",)),
    80: (_R, ("ipsweep",)), 81: (_R, ("portsweep",)), 82: (_R, ("nmap",)), 83: (_K, ("guess-passwd",)),
    84: (_K, ("ftp-write",)), 85: (_K, ("imap",)), 86: (_W, ("phf",)), 87: (_K, ("multihop",)),
    88: (_K, ("warezmaster",)), 89: (_K, ("warezclient",)), 90: (_K, ("spy",)), 91: (_E, ("buffer-overflow",)),
    92: (_E, ("loadmodule",)), 93: (_E, ("perl",)), 94: (_E, ("rootkit",)), 95: (_D, ("apache2",)),
    96: (_D, ("mailbomb",)), 97: (_D, ("processtable",)), 98: (_D, ("udpstorm",)), 99: (_R, ("mscan",)),
    100: (_R, ("saint",)), 101: (_K, ("httptunnel",)), 102: (_K, ("named",)), 103: (_K, ("sendmail",)),
    104: (_K, ("snmpgetattack",)), 105: (_K, ("snmpguess",)), 106: (_K, ("xlock",)), 107: (_K, ("xsnoop",)),
    109: (_E, ("ps",)), 110: (_E, ("sqlattack",)), 111: (_E, ("xterm",)),
    200: (_M, ("attack", "malicious", "anomaly", "abnormal", "intrusion")),
    210: (_R, ("scan",)), 211: (_K, ("bruteforce",)), 212: (_W, ("webattack",)),
}  # fmt: skip

BENIGN_NAMES = frozenset({"benign", "normal", "background", "legitimate"})
"""Normalised class names that never raise an alert (besides the card's ``benign_class``)."""


def normalise(name: str) -> str:
    """Lower case, every run of other characters than letters and digits as one ``-``.

    >>> normalise("Web Attack – Brute Force")
    'web-attack-brute-force'
    """
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def is_benign(name: str) -> bool:
    """True for the benign class names of the datasets tapwatch knows.

    >>> is_benign("BENIGN"), is_benign("Normal"), is_benign("DoS")
    (True, True, False)
    """
    return normalise(name) in BENIGN_NAMES


_CLASS_INDEX = {alias: (idx, cat) for idx, (cat, aliases) in CLASSES.items() for alias in aliases}


def family_of(model: str) -> tuple[int, str] | None:
    """The registry family of a model name: the lowest-indexed family one of whose names is a token run.

    >>> family_of("Hybrid-Seq2Seq-ConvLSTM v3")
    (1, 'hybrid')
    >>> family_of("cic-random-forest"), family_of("test-identity")
    ((5, 'random-forest'), None)
    """
    padded = f"-{normalise(model)}-"
    for idx, names in FAMILIES.items():
        if any(f"-{n}-" in padded for n in names):
            return idx, names[0]
    return None


def fallback_sid(family: str, class_name: str) -> int:
    """A stable id in the reserved range for a family or class missing from the registries.

    >>> fallback_sid("x", "y") == fallback_sid("x", "y")
    True
    """
    digest = hashlib.blake2b(f"{normalise(family)}|{normalise(class_name)}".encode(), digest_size=8).digest()
    return FALLBACK_BASE + int.from_bytes(digest, "big") % FALLBACK_SIZE


@dataclass(frozen=True)
class Signature:
    """The rule-like identity of a model class.

    Parameters
    ----------
    sid
        ``alert.signature_id``.
    msg
        ``alert.signature``, e.g. ``TAPWATCH ML DoS Hulk (hybrid)``.
    category
        The class family; gives ``alert.category`` and the severity.
    severity
        ``alert.severity``; one step lower (numerically higher, at most 3) for an attempted attack.
    class_name, family
        The class as the model names it, and the registry family (or the normalised model name).
    registered
        False when the id came from the fallback hash.
    """

    sid: int
    msg: str
    category: Category
    severity: Severity
    class_name: str
    family: str
    registered: bool
    gid: int = GID
    rev: int = REV


@lru_cache(maxsize=4096)
def signature_for(model: str, class_name: str, family_override: str | None = None) -> Signature:
    """The signature of ``class_name`` predicted by model ``model`` (the card's ``name``)."""
    fam = family_of(family_override or model)
    family = fam[1] if fam else normalise(family_override or model)
    norm = normalise(class_name)
    attempted = norm.endswith("-attempted")
    base = norm.removesuffix("-attempted") if attempted else norm
    found = _CLASS_INDEX.get(base)
    category = found[1] if found else Category.UNKNOWN
    severity = Severity(min(int(category.severity) + attempted, int(Severity.LOW)))
    if fam is not None and found is not None:
        sid, registered = SID_BASE + fam[0] * 1000 + found[0] + (ATTEMPTED_OFFSET if attempted else 0), True
    else:
        sid, registered = fallback_sid(family, norm), False
    return Signature(sid, f"TAPWATCH ML {class_name} ({family})", category, severity, class_name, family, registered)
