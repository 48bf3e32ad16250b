"""Settings: one pydantic-settings class read from ``CLOUDFILM_*`` env and an optional TOML file.

The TOML file is named by ``CLOUDFILM_CONFIG`` (or ``--config`` on the CLI). Its keys are the
setting names in lower case; nested tables are joined with ``_`` (``[dicom] port = 104`` is
``dicom_port``), and ``[dicom.modalities]`` holds the known remote AEs. Environment variables win
over the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pacs.errors import SettingsError
from pacs.partitions import PartitionConfig, check_partitions
from pacs.retention.rules import RetentionRule, Tier, check_retention
from pacs.routing.rules import Destination, Rule, check_routing

CONFIG_ENV = "CLOUDFILM_CONFIG"
DATA_DIR_ENV = "CLOUDFILM_DATA_DIR"

#: DIMSE services a calling AE may be allowed (issue 3): C-ECHO, C-STORE, C-FIND (study queries and the
#: modality worklist), C-MOVE, C-GET, Storage Commitment, Modality Performed Procedure Step (issue 17).
DimseService = Literal["echo", "store", "find", "move", "get", "commit", "mpps"]
ALL_DIMSE_SERVICES: tuple[DimseService, ...] = ("echo", "store", "find", "move", "get", "commit", "mpps")
_DEFAULT_UNKNOWN: tuple[DimseService, ...] = ("echo", "store")


class RemoteAE(BaseModel):
    """A DICOM peer the archive knows by AE title (C-MOVE destination, query/retrieve client)."""

    aet: str
    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False
    allow: list[DimseService] = Field(default_factory=lambda: list(ALL_DIMSE_SERVICES))  # DIMSE (issue 3)


class Settings(BaseSettings):
    """Every option of a cloudfilm process. See README "Configuration"."""

    model_config = SettingsConfigDict(env_prefix="CLOUDFILM_", extra="ignore", case_sensitive=False)

    data_dir: Path = Path("./cloudfilm-data")
    database_url: str | None = None
    storage_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = False
    s3_region: str | None = None

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # Worker processes of ``serve`` sharing its HTTP and DICOM ports; default: one per core on
    # PostgreSQL, one on SQLite (whose single writer gains nothing from more). See :meth:`serve_processes`.
    processes: int | None = Field(default=None, ge=1, le=256)
    # Seconds ``serve`` gives in-flight requests and associations to finish after SIGTERM.
    shutdown_grace: float = Field(default=20.0, ge=0, le=3600)
    public_url: str | None = None
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    ae_title: str = "CLOUDFILM"
    dicom_open: bool = False
    dicom_modalities: dict[str, RemoteAE] = Field(default_factory=dict)

    stable_age: float = Field(default=60.0, gt=0)
    overwrite: bool = False
    admin_password: SecretStr | None = None
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line with request/association/job IDs
    max_upload_bytes: int = Field(default=4 * 1024**3, gt=0)
    # What a killed write leaves (temp, staging and spool files; orphan objects) is removed once
    # older than this, at ``serve``/``worker`` start and by ``fsck --repair``: never a live write's.
    leftover_grace: float = Field(default=3600.0, ge=0)
    # IHE IOCM (issue 17): instances a rejection note names are hidden at once and deleted this many
    # seconds later by the worker (default 30 days).
    rejection_grace: float = Field(default=30 * 86400.0, ge=0)

    # Ingest (issue 12)
    # Store native pixel data shorter than Rows x Columns x samples x bits x frames need, and
    # encapsulated pixel data with no fragments or fewer fragments than frames (refused by default).
    ingest_accept_short_pixel_data: bool = False

    # DICOMweb (issue 4)
    dicomweb_max_parts: int = Field(default=10_000, gt=0)  # parts in one STOW-RS request
    dicomweb_spool_dir: Path | None = None  # large STOW-RS parts and C-STORE datasets wait here (DATA_DIR/spool)
    dicomweb_delete: bool = True  # DELETE of studies/series/instances (405 when off)
    cors_origins: str = ""  # comma-separated origins allowed cross-origin ("*" for any); empty: none
    ohif_dir: Path | None = None  # a built OHIF viewer (``dist/``) to serve at /ohif/
    codecs_dir: Path | None = None  # the viewer's in-browser image decoders (scripts/fetch_codecs.sh), at /codecs/

    # DIMSE (issue 3)
    dicom_enabled: bool = True  # run the DICOM listener in ``cloudfilm serve``
    dicom_host: str = "0.0.0.0"  # address the DICOM listener binds
    dicom_allow_unknown: list[DimseService] = Field(default_factory=lambda: list(_DEFAULT_UNKNOWN))  # not in modalities
    dicom_check_peer_host: bool = True  # a modality is recognised only from the address of its ``host``
    dicom_check_called_aet: bool = True  # reject associations not addressed to AE_TITLE
    dicom_max_associations: int = Field(default=32, ge=1, le=1000)  # held from the A-ASSOCIATE-RQ to the close
    dicom_max_connections_per_address: int = Field(default=16, ge=1, le=1000)  # open at once from one peer address
    dicom_artim_timeout: float = Field(default=5.0, gt=0, le=120)  # to send the A-ASSOCIATE-RQ (TLS included)
    dicom_accept_unknown_sop_classes: bool = False  # C-STORE of private/unknown SOP classes, stored as received
    dicom_max_pdu: int = Field(default=1024 * 1024, ge=4096, le=64 * 1024 * 1024)  # bytes we accept in one PDU
    dicom_acse_timeout: float = Field(default=30.0, gt=0)  # association negotiation (as requestor) / release
    dicom_dimse_timeout: float = Field(default=60.0, gt=0)  # waiting for a DIMSE message
    dicom_network_timeout: float = Field(default=60.0, gt=0)  # idle connection
    dicom_tls_port: int | None = Field(default=None, ge=0, le=65535)  # DICOM TLS listener (PS3.15 B.1)
    dicom_tls_cert: Path | None = None  # PEM server certificate (chain)
    dicom_tls_key: Path | None = None  # PEM private key
    dicom_tls_ca: Path | None = None  # PEM CA bundle: when set, client certificates are required and verified

    # Accounts and shares (issue 5)
    secret_key: SecretStr | None = None  # signs sessions, tokens, share links; default: DATA_DIR/secret_key
    auth_disabled: bool = False  # no login at all: ``serve`` then refuses any non-loopback HTTP_HOST
    session_hours: float = Field(default=12.0, gt=0)  # browser session cookie lifetime
    token_minutes: float = Field(default=15.0, gt=0)  # OAuth2 bearer (JWT) lifetime
    share_default_days: int = Field(default=30, ge=1)  # share link expiry when none is asked for
    share_max_days: int = Field(default=365, ge=1)  # longest expiry a share link may have
    login_max_failures: int = Field(default=10, ge=1)  # per username in 15 minutes (3x that per address)

    # The patient's film (issue 13)
    institution_name: str = Field(default="", max_length=128)  # shown on share and patient pages
    # What patients and share visitors see of AI output: "reviewed" (only findings a physician accepted,
    # marked as reviewed) or "none" (no AI output at all). Never unreviewed findings.
    patient_ai: Literal["reviewed", "none"] = "reviewed"
    # The worklist flags a study whose AI results hold a finding or a classification at least this
    # probable (plugins declare no threshold of their own).
    ai_flag_threshold: float = Field(default=0.5, ge=0, le=1)

    # Telling patients (issue 13): e-mails (and texts) with their link, sent as jobs of the worker below
    smtp_host: str | None = None  # the SMTP server (submission); unset: no e-mail is sent
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None  # AUTH LOGIN/PLAIN user; unset: no authentication
    smtp_password: SecretStr | None = None
    smtp_from: str = ""  # the From: header, e.g. "Radiology <films@hospital.example>"; required with SMTP_HOST
    smtp_starttls: bool = True  # upgrade with STARTTLS (the certificate is verified) before AUTH and MAIL
    smtp_timeout: float = Field(default=30.0, gt=0, le=600)  # seconds to wait for the server at each step
    sms_webhook_url: str | None = None  # an SMS gateway taking {"to", "text", "id"} as JSON; unset: no texts
    sms_webhook_token: SecretStr | None = None  # sent as "Authorization: Bearer …" to the gateway
    notify_max_attempts: int = Field(default=8, ge=1, le=100)  # attempts per message before its dead letter

    # AI jobs (issue 6)
    worker_concurrency: int = Field(default=1, ge=0, le=64)  # jobs ``serve`` runs at once (0: no workers in serve)
    job_max_attempts: int = Field(default=3, ge=1, le=100)  # attempts before a job is dead-lettered
    job_retry_backoff: float = Field(default=30.0, gt=0)  # seconds before the first retry; doubles each attempt
    job_retry_backoff_max: float = Field(default=3600.0, gt=0)  # longest wait between two attempts
    job_lease: float = Field(default=60.0, gt=0)  # seconds a claimed job stays a worker's without a heartbeat
    job_timeout: float = Field(default=900.0, gt=0)  # per-job limit for in-process plugins that set none
    job_poll_interval: float = Field(default=1.0, gt=0)  # how often idle workers and the stable-study detector look
    # Edge workers (issue 15): clinical runs of these plugins (names) are left to edge workers, which
    # lease them over the HTTP API; the archive's own workers never take them
    edge_plugins: list[str] = Field(default_factory=list)

    # Webhooks (issue 17): deliveries are jobs of the worker above, retried with its backoff
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)  # attempts per event before its dead letter
    webhook_timeout: float = Field(default=10.0, gt=0, le=300)  # seconds to wait for a receiver's answer

    # Algorithm packages (issue 15): the most any package may use per case, whatever its manifest asks
    package_max_upload_mb: int = Field(default=2048, ge=1)  # size of an uploaded package file
    package_max_memory_mb: int = Field(default=16384, ge=256)  # address space (RLIMIT_AS)
    package_max_cpu_s: int = Field(default=3600, ge=1)  # CPU seconds per process (RLIMIT_CPU)
    package_max_scratch_mb: int = Field(default=4096, ge=1)  # the writable /scratch tmpfs
    package_max_processes: int = Field(default=64, ge=4)  # processes and threads at once
    # Routing (issue 17): the [routing] table, see pacs.routing.rules and README "Routing rules"
    routing_destinations: dict[str, Destination] = Field(default_factory=dict)
    routing_rules: list[Rule] = Field(default_factory=list)
    # Retention and tiering (issue 17): the [retention] table, see pacs.retention.rules and README "Retention"
    retention_run_at: str = "02:00"  # UTC time of day the nightly retention job is queued
    retention_tiers: dict[str, Tier] = Field(default_factory=dict)
    retention_rules: list[RetentionRule] = Field(default_factory=list)

    # Partitions (issue 17): the [partitions.<slug>] tables, see pacs.partitions and README "Partitions"
    partitions: dict[str, PartitionConfig] = Field(default_factory=dict)

    # HL7 v2 over MLLP (issues 13, 17): ORU results and ORM/OMI orders; off unless a port is set
    hl7_port: int | None = Field(default=None, ge=0, le=65535)
    hl7_host: str = "0.0.0.0"  # every interface, like DICOM: the RIS is on the network
    hl7_max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)  # one framed message
    hl7_idle_timeout: float = Field(default=60.0, gt=0, le=3600)  # a connection silent this long is closed
    hl7_max_connections: int = Field(default=64, ge=1, le=10_000)  # open at once (the longest idle one yields)
    # [hl7.partitions]: Sending Facility (MSH-4.1) -> partition slug; a message from any other goes to "default"
    hl7_partitions: dict[str, str] = Field(default_factory=dict)

    # The deployment gate and watch (issue 15): [plugins.gate] and [plugins.watch], README "Deployment gate"
    plugins_gate_benchmark: str | None = Field(default=None, max_length=64)  # enabling needs an evaluation on it
    plugins_gate_metric: str = Field(default="auc", min_length=1, max_length=32)  # the evaluation metric compared
    plugins_gate_min: float = 0.0  # the least value of that metric that passes
    plugins_watch_window_days: float = Field(default=28.0, gt=0)  # physician reviews the acceptance rate covers
    plugins_watch_min_reviews: int = Field(default=20, ge=1)  # reviews in the window before the alert may fire

    # Benchmarks (issue 7)
    benchmark_evals_per_day: int = Field(default=3, ge=1)  # evaluations per plugin per benchmark in any 24 hours
    benchmark_bootstrap: int = Field(default=2000, ge=100, le=100_000)  # resamples behind each confidence interval

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        value = value.strip()
        if not 0 < len(value) <= 16 or "\\" in value or not value.isprintable():
            raise ValueError("must be 1 to 16 printable characters without backslash")
        return value

    @field_validator("processes", mode="before")
    @classmethod
    def _blank_processes(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value  # PROCESSES= (a blank .env entry)

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("file://", "s3://")):
            raise ValueError("must start with file:// or s3://")
        return value

    @field_validator("ohif_dir", "codecs_dir", mode="before")
    @classmethod
    def _no_ohif_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value  # CLOUDFILM_OHIF_DIR="": none

    @model_validator(mode="after")
    def _check_routing(self) -> Settings:
        check_routing(self.routing_destinations, self.routing_rules, frozenset({"default", *self.partitions}))
        return self

    @model_validator(mode="after")
    def _check_partitions(self) -> Settings:
        check_partitions(self.partitions, self.ae_title)
        for facility, slug in self.hl7_partitions.items():
            if slug != "default" and slug not in self.partitions:
                raise ValueError(f"[hl7.partitions] sends facility {facility!r} to {slug!r}, which is no partition")
        return self

    @model_validator(mode="after")
    def _check_retention(self) -> Settings:
        check_retention(self.retention_tiers, self.retention_rules, self.retention_run_at,
                        frozenset({"default", *self.partitions}))
        return self

    @model_validator(mode="after")
    def _check_smtp(self) -> Settings:
        if self.smtp_host and "@" not in self.smtp_from:
            raise ValueError("CLOUDFILM_SMTP_FROM (the sender's address) is required with CLOUDFILM_SMTP_HOST")
        if self.sms_webhook_url and not self.sms_webhook_url.startswith(("http://", "https://")):
            raise ValueError("CLOUDFILM_SMS_WEBHOOK_URL must be an http:// or https:// URL")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    # Derived values -------------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return f"file://{(self.data_dir / 'objects').resolve()}"

    @property
    def base_url(self) -> str:
        """The archive's address in links it hands out (no trailing slash): ``PUBLIC_URL``, else the
        HTTP listener's own (a wildcard address as this machine's loopback)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.http_host.strip()
        if host.strip("[]") in ("", "0.0.0.0", "::"):
            host = "127.0.0.1" if ":" not in host else "[::1]"
        elif ":" in host:
            host = f"[{host.strip('[]')}]"
        return f"http://{host}:{self.http_port}"

    @property
    def serve_processes(self) -> int:
        """How many worker processes ``serve`` runs: ``PROCESSES`` if set, else one per core when the
        index is PostgreSQL and one on SQLite."""
        if self.processes is not None:
            return self.processes
        if self.resolved_database_url.startswith("postgresql"):
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return 1

    @property
    def spool_dir(self) -> Path:
        """Where received data too large for memory waits for ingest (STOW-RS parts, C-STORE datasets)."""
        return self.dicomweb_spool_dir or self.data_dir / "spool"


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by ``CLOUDFILM_CONFIG``, flattening nested tables into names."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get(CONFIG_ENV)
        self._values: dict[str, Any] = {}
        if path:
            try:
                with open(path, "rb") as fh:
                    raw = tomllib.load(fh)
            except FileNotFoundError as exc:
                raise SettingsError(f"config file {path} (from {CONFIG_ENV}) does not exist") from exc
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
            fields = set(settings_cls.model_fields)
            self._flatten(raw, (), fields, path)

    def _flatten(self, table: dict[str, Any], prefix: tuple[str, ...], fields: set[str], path: str) -> None:
        for key, value in table.items():
            name = "_".join((*prefix, key)).lower()
            if name in fields:
                self._values[name] = value
            elif isinstance(value, dict):
                self._flatten(value, (*prefix, key), fields, path)
            else:
                raise SettingsError(f"config file {path}: unknown setting {'.'.join((*prefix, key))!r}")

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def load_settings(config_path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings`, turning any validation failure into one :class:`SettingsError` line."""
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(config_path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = "_".join(str(p) for p in first["loc"]) or "settings"
        raise SettingsError(f"invalid setting CLOUDFILM_{loc.upper()}: {first['msg']}") from exc
