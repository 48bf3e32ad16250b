"""The lines ``serve`` ends its start-up with: where to open the archive, how to sign in, where the
data lives and who may send studies to it. Printed once both listeners answer, so it is the last
thing a first start shows, above nothing but later activity."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pacs import __version__
from pacs.accounts.users import SeededAdmin, list_users
from pacs.archive import Archive
from pacs.settings import Settings


@dataclass(frozen=True, slots=True)
class StartUp:
    """What happened at this start that the banner reports."""

    created: bool  # the index did not exist before this start
    admin: SeededAdmin | None  # the admin account seeded by this start, if any


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_any(host: str) -> bool:
    return host.strip("[]") in ("", "0.0.0.0", "::")


def _url(settings: Settings) -> str:
    return settings.base_url + "/"


def _reach(host: str) -> str:
    if is_loopback(host):
        return "this machine only"
    if _is_any(host):
        return "every network address of this machine"
    return f"the network through {host}"


def _sign_in(settings: Settings, start: StartUp, admins: list[str]) -> str:
    if settings.auth_disabled:
        return "no sign-in: CLOUDFILM_AUTH_DISABLED is on (loopback only)"
    if start.admin is not None and start.admin.password is not None:
        return (f"{start.admin.username}  password: {start.admin.password}  (shown once; change it with "
                f"`cloudfilm users passwd {start.admin.username}`)")
    if start.admin is not None:
        return f"{start.admin.username}, with CLOUDFILM_ADMIN_PASSWORD"
    if admins:
        return f"{admins[0]}  (the admin account; `cloudfilm users passwd {admins[0]}` resets a forgotten one)"
    return "an account of this archive (`cloudfilm users list`)"


def _links(settings: Settings) -> str | None:
    """Where share links, QR codes and e-mails point, when nobody said (``CLOUDFILM_PUBLIC_URL``)."""
    if settings.public_url:
        return None
    if is_loopback(settings.http_host) or _is_any(settings.http_host):
        return (f"share links, QR codes and e-mails point at {_url(settings)}, which only this machine opens: "
                "set CLOUDFILM_PUBLIC_URL to the address phones and other computers reach")
    return f"share links point at {_url(settings)} (CLOUDFILM_PUBLIC_URL is unset)"


def _admins(archive: Archive) -> list[str]:
    return [u.username for u in list_users(archive.engine) if u.role == "admin" and not u.disabled]


def _who_stores(settings: Settings) -> str:
    if is_loopback(settings.dicom_host):
        return "only programs on this machine can reach the DICOM port"
    if settings.dicom_open or "store" in settings.dicom_allow_unknown:
        return ("ANYONE who reaches this port may store studies, under any AE title (list your modalities "
                "in [dicom.modalities] and set CLOUDFILM_DICOM_ALLOW_UNKNOWN=echo to close it)")
    known = [m.aet for m in settings.dicom_modalities.values() if "store" in m.allow]
    if not known:
        return "nobody may store: no configured modality is allowed to, and unknown AEs may not"
    return f"only the configured modalities may store: {', '.join(sorted(known))}"


def _ohif(settings: Settings) -> str:
    if settings.ohif_dir is not None and (settings.ohif_dir / "index.html").is_file():
        return f"{_url(settings)}ohif/  (studies open in it from the worklist)"
    if settings.ohif_dir is not None:
        return f"not served: {settings.ohif_dir} holds no built OHIF (index.html); run scripts/fetch_ohif.sh"
    return ("not installed: `make run` adds it when npm is here (apt-get install npm), or set "
            "CLOUDFILM_OHIF_DIR=\"$(scripts/fetch_ohif.sh)\"")


def _codecs(settings: Settings) -> str:
    if settings.codecs_dir is not None and (settings.codecs_dir / "VERSIONS").is_file():
        return f"{_url(settings)}codecs/  (compressed frames are decoded in the browser)"
    if settings.codecs_dir is not None:
        return f"not served: {settings.codecs_dir} holds no decoders (VERSIONS); run scripts/fetch_codecs.sh"
    return ("not installed: compressed frames show as rendered JPEG; `make run` adds them when npm is here, "
            "or set CLOUDFILM_CODECS_DIR=\"$(scripts/fetch_codecs.sh)\"")


def startup_banner(archive: Archive, start: StartUp, *, processes: int = 1) -> str:
    settings = archive.settings
    lines = [f"cloudfilm {__version__} is ready"
             + (" (a new archive was created by this start)" if start.created else ""),
             f"  open        {_url(settings)}   (reachable from {_reach(settings.http_host)})",
             f"  sign in     {_sign_in(settings, start, _admins(archive))}"]
    if links := _links(settings):
        lines.append(f"  links       {links}")
    lines.append(f"  OHIF        {_ohif(settings)}")
    lines.append(f"  decoders    {_codecs(settings)}")
    if processes > 1:
        lines.append(f"  processes   {processes}, sharing the HTTP and DICOM ports (CLOUDFILM_PROCESSES)")
    if settings.database_url or settings.storage_url:
        lines.append(f"  index       {archive.engine.url.render_as_string(hide_password=True)}")
        lines.append(f"  objects     {archive.store.url}")
    else:
        lines.append(f"  data        {settings.data_dir.resolve()}  (SQLite index + files)")
    if settings.dicom_enabled:
        tls = f", TLS on port {settings.dicom_tls_port}" if settings.dicom_tls_port is not None else ""
        lines.append(f"  modalities  send to AE title {settings.ae_title} at {settings.dicom_host} port "
                     f"{settings.dicom_port}{tls}  (reachable from {_reach(settings.dicom_host)})")
        lines.append(f"  storing     {_who_stores(settings)}")
    else:
        lines.append("  modalities  the DICOM listener is off (CLOUDFILM_DICOM_ENABLED=false); STOW-RS only")
    width = max(len(line) for line in lines)
    rule = "-" * min(width, 100)
    return "\n".join([rule, *lines, rule])
