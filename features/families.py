"""The attack families an operator knows, and the words an alert uses for each.

A model predicts dataset classes ("DoS Hulk", "SSH-Patator", "Portscan"); an alert is named by its family:
scan, dos, bruteforce, webattack or botnet. The class stays in the alert as detail (``ml.class``). The text of
``alert.category`` follows Suricata's ``classification.config``, so dashboards built for Suricata group
tapwatch's alerts with the rules' alerts.

>>> family_of_class("DoS Slowloris"), family_of_class("Portscan"), family_of_class("BENIGN")
(<Family.DOS: 'dos'>, <Family.SCAN: 'scan'>, <Family.BENIGN: 'benign'>)
>>> Family.SCAN.category
'Detection of a Network Scan'
"""

from __future__ import annotations

import re
from enum import Enum


class Family(str, Enum):
    """What an operator calls a kind of traffic (the lab labels flows with the same names)."""

    BENIGN = "benign"
    SCAN = "scan"
    DOS = "dos"
    BRUTEFORCE = "bruteforce"
    WEBATTACK = "webattack"
    BOTNET = "botnet"

    @property
    def category(self) -> str:
        """``alert.category``: Suricata ``classification.config`` wording."""
        return _TEXT[self][0]

    @property
    def label(self) -> str:
        """A short name for signatures and summaries, e.g. ``Network scan``."""
        return _TEXT[self][1]

    @property
    def by_victim(self) -> bool:
        """True when the family's episodes are keyed by the victim (a flood is about whom it hits; everything
        else is about who does it)."""
        return self is Family.DOS

    @property
    def number(self) -> int:
        """Stable 1..5 (0 for benign): the family's place in signature ids. Append only; never renumber."""
        return _INDEX[self]


_TEXT: dict[Family, tuple[str, str]] = {
    Family.BENIGN: ("Not Suspicious Traffic", "Benign traffic"),
    Family.SCAN: ("Detection of a Network Scan", "Network scan"),
    Family.DOS: ("Attempted Denial of Service", "Denial of service"),
    Family.BRUTEFORCE: ("Attempted User Privilege Gain", "Password guessing"),
    Family.WEBATTACK: ("Web Application Attack", "Web application attack"),
    Family.BOTNET: ("A Network Trojan was detected", "Botnet command and control"),
}
_INDEX = {Family.BENIGN: 0, Family.SCAN: 1, Family.DOS: 2, Family.BRUTEFORCE: 3, Family.WEBATTACK: 4, Family.BOTNET: 5}

ATTACK_FAMILIES = tuple(f for f in Family if f is not Family.BENIGN)

# Normalised dataset class names -> family. CIC-IDS2017 (Engelen's names and the original ones), UNSW-NB15,
# ToN-IoT and NSL-KDD. A scan is a scan wherever it comes from ("Infiltration - Portscan" is a scan from an
# infected host); an exploit of a service counts as a web application attack, the closest family; a host that
# is taken over (infiltration, backdoor, worm, ransomware) is botnet. A family's own name (the classes of the
# models trained on the lab's flows) is that family.
_CLASSES: dict[Family, tuple[str, ...]] = {
    Family.BENIGN: ("benign", "normal", "background", "legitimate"),
    Family.SCAN: ("scan", "portscan", "port-scan", "infiltration-portscan", "reconnaissance", "scanning", "probe",
                  "satan", "ipsweep", "portsweep", "nmap", "mscan", "saint"),
    Family.DOS: ("dos-hulk", "dos-goldeneye", "dos-slowloris", "dos-slowhttptest", "ddos", "ddos-loit", "dos",
                 "neptune", "smurf", "back", "teardrop", "pod", "land", "apache2", "mailbomb", "processtable",
                 "udpstorm"),
    Family.BRUTEFORCE: ("bruteforce", "ftp-patator", "ssh-patator", "password", "guess-passwd", "ftp-write", "imap",
                        "snmpguess", "snmpgetattack", "r2l", "multihop", "warezmaster", "warezclient", "spy", "named",
                        "sendmail", "xlock", "xsnoop"),
    Family.WEBATTACK: ("webattack", "web-attack-brute-force", "web-attack-xss", "web-attack-sql-injection",
                       "web-attack-sqli", "heartbleed", "injection", "xss", "exploits", "shellcode", "generic",
                       "fuzzers", "analysis", "phf", "u2r", "buffer-overflow", "loadmodule", "perl", "rootkit", "ps",
                       "sqlattack", "xterm", "httptunnel", "mitm"),
    Family.BOTNET: ("bot", "botnet", "infiltration", "backdoor", "backdoors", "worms", "worm", "ransomware"),
}  # fmt: skip
_BY_NAME = {name: fam for fam, names in _CLASSES.items() for name in names}


def normalise(name: str) -> str:
    """Lower case, every run of other characters than letters and digits as one ``-``.

    >>> normalise("Web Attack – Brute Force")
    'web-attack-brute-force'
    """
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def family_of_class(name: str) -> Family | None:
    """The family of a dataset class name; None for a name tapwatch does not know.

    An ``... - Attempted`` label (Engelen's attempted attacks) has its attack's family.

    >>> family_of_class("Web Attack - SQL Injection - Attempted"), family_of_class("Weird")
    (<Family.WEBATTACK: 'webattack'>, None)
    """
    return _BY_NAME.get(normalise(name).removesuffix("-attempted"))


def parse_family(text: str) -> Family:
    """A family from its name; ValueError naming the valid ones.

    >>> parse_family("DoS")
    <Family.DOS: 'dos'>
    """
    try:
        return Family(text.strip().lower())
    except ValueError:
        raise ValueError(f"unknown family {text!r} (valid: {', '.join(f.value for f in Family)})") from None
