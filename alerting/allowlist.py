"""The allow-list: hosts, networks and ports whose episodes are never written (a vulnerability scanner, a
monitoring host, the backup server's nightly burst).

One entry per line, ``#`` starts a comment: an address (``10.0.0.5``), a network (``192.168.50.0/24``), or a
port (``port 161``, ``port 161/udp``). An episode is allowed (not written, counted as ``whitelist``) when its host
(the source, or the victim of a flood), its busiest peer, or its representative flow's destination port is
listed. Suricata users keep the same in ``threshold.config`` ``pass-net`` lines, which also apply.

>>> allow = AllowList.parse("10.0.0.5\\n192.168.50.0/24  # scanners\\nport 161/udp")
>>> allow.allows_host("192.168.50.7"), allow.allows_host("10.0.0.6"), allow.allows_port(161, 17)
(True, False, True)
>>> allow.allows_port(161, 6)
False
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from tapwatch.features.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}


@dataclass(frozen=True)
class AllowList:
    networks: tuple[Network, ...] = ()
    ports: tuple[tuple[int, int | None], ...] = ()

    @classmethod
    def parse(cls, text: str, source: str = "allow-list") -> AllowList:
        nets: list[Network] = []
        ports: list[tuple[int, int | None]] = []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"port\s+(\d+)(?:/(tcp|udp|icmp))?", line, re.IGNORECASE)
            try:
                if m:
                    port = int(m.group(1))
                    if not 0 <= port <= 65535:
                        raise ValueError(f"port {port} is outside 0..65535")
                    ports.append((port, _PROTOS[m.group(2).lower()] if m.group(2) else None))
                else:
                    nets.append(ipaddress.ip_network(line, strict=False))
            except ValueError as err:
                raise ConfigError("allow_list", f"{source} line {n}: {line!r}: {err}") from err
        return cls(tuple(nets), tuple(ports))

    @classmethod
    def load(cls, path: str | Path) -> AllowList:
        try:
            return cls.parse(Path(path).read_text(), str(path))
        except OSError as err:
            raise ConfigError("allow_list", f"{path}: {err.strerror or err}") from err

    def allows_host(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)

    def allows_port(self, port: int, proto: int) -> bool:
        return any(p == port and (q is None or q == proto) for p, q in self.ports)
