"""Who a calling AE is and what it may do: per-AE permissions from ``[dicom.modalities]``.

A calling AE is *known* when its AE title matches a configured modality and (unless
``CLOUDFILM_DICOM_CHECK_PEER_HOST=false``) the connection comes from an address of that modality's
``host``; a known AE may use the services in its ``allow`` list (all by default). Any other AE may
use ``CLOUDFILM_DICOM_ALLOW_UNKNOWN`` (C-ECHO and C-STORE by default), or everything when
``CLOUDFILM_DICOM_OPEN=true``. AE titles are not authentication (PS3.15 B): use TLS with client
certificates where peers must be proven.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pacs.settings import ALL_DIMSE_SERVICES, DimseService, RemoteAE, Settings

log = logging.getLogger(__name__)

_RESOLVE_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class Peer:
    """The remote end of one association, as the archive sees it."""

    calling_aet: str
    address: str
    port: int
    modality: RemoteAE | None  # the configured entry it was recognised as, if any
    allowed: frozenset[DimseService]
    partition: int = 1  # the partition the association called (by its Called AE Title), pacs.partitions

    def may(self, service: DimseService) -> bool:
        return service in self.allowed

    def __str__(self) -> str:
        return f"{self.calling_aet}@{self.address}:{self.port}"


def _normalise(address: str) -> str:
    """``::ffff:10.0.0.1`` and ``10.0.0.1`` are the same peer."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class AccessPolicy:
    """Identifies calling AEs and looks up move destinations; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self._modalities = list(settings.dicom_modalities.values())
        self._by_aet: dict[str, list[RemoteAE]] = {}
        for remote in self._modalities:
            self._by_aet.setdefault(remote.aet.strip(), []).append(remote)
        self._open = settings.dicom_open
        self._unknown = frozenset(settings.dicom_allow_unknown)
        self._check_host = settings.dicom_check_peer_host
        self._resolved: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def identify(self, calling_aet: str, address: str, port: int) -> Peer:
        """The permissions of the AE calling from ``address``."""
        aet = calling_aet.strip()
        for remote in self._by_aet.get(aet, ()):
            if not self._check_host or _normalise(address) in self._addresses(remote.host):
                return Peer(aet, address, port, remote, frozenset(remote.allow))
        if aet in self._by_aet:
            log.warning("calling AE %s connected from %s, which is not its configured host; "
                        "treated as an unknown AE", aet, address)
        allowed = frozenset(ALL_DIMSE_SERVICES) if self._open else self._unknown
        return Peer(aet, address, port, None, allowed)

    def destination(self, aet: str) -> RemoteAE | None:
        """The configured modality with AE title ``aet`` (a C-MOVE destination), if any."""
        found = self._by_aet.get(aet.strip())
        return found[0] if found else None

    def modalities(self) -> Iterable[RemoteAE]:
        return tuple(self._modalities)

    def _addresses(self, host: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            cached = self._resolved.get(host)
            if cached is not None and now - cached[0] < _RESOLVE_TTL_S:
                return cached[1]
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            found = frozenset(_normalise(str(info[4][0])) for info in infos)
        except OSError as exc:
            log.warning("cannot resolve modality host %s: %s", host, exc)
            found = frozenset()
        with self._lock:
            self._resolved[host] = (now, found)
        return found
