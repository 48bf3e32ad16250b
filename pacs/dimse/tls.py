"""DICOM TLS (PS3.15 B.1 / BCP 195): TLS 1.2 or newer, optional client certificate verification."""

from __future__ import annotations

import ssl
from pathlib import Path

from pacs.errors import SettingsError
from pacs.settings import Settings


def _require(path: Path | None, name: str) -> Path:
    if path is None:
        raise SettingsError(f"invalid setting CLOUDFILM_{name}: required when CLOUDFILM_DICOM_TLS_PORT is set")
    if not path.is_file():
        raise SettingsError(f"invalid setting CLOUDFILM_{name}: {path} does not exist")
    return path


def server_context(settings: Settings) -> ssl.SSLContext:
    """The listener's TLS context; with ``DICOM_TLS_CA`` every client must present a certificate it signed."""
    cert = _require(settings.dicom_tls_cert, "DICOM_TLS_CERT")
    key = _require(settings.dicom_tls_key, "DICOM_TLS_KEY")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"cannot load the DICOM TLS certificate {cert} / key {key}: {exc}") from exc
    if settings.dicom_tls_ca is not None:
        ca = _require(settings.dicom_tls_ca, "DICOM_TLS_CA")
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(f"cannot load the DICOM TLS CA bundle {ca}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(settings: Settings) -> ssl.SSLContext:
    """TLS for associations the archive opens (C-MOVE, storage commitment reports) to ``tls = true`` peers.

    The peer's certificate is verified against ``DICOM_TLS_CA`` (or the system store); host names are
    not checked because DICOM nodes are identified by certificate, not DNS name (PS3.15 B.1). The
    archive presents its own certificate when it has one.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if settings.dicom_tls_ca is not None:
        ctx.load_verify_locations(cafile=str(_require(settings.dicom_tls_ca, "DICOM_TLS_CA")))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.dicom_tls_cert is not None and settings.dicom_tls_key is not None:
        ctx.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    return ctx
