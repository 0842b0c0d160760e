"""Configuration: the only module that reads it, from a mapping tests pass in."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from storage.blobs.stores import check_blob_url, store_identity
from storage.keys.hierarchy import MasterKeys, decode_master_key, load_or_create_dev_key
from storage.keys.passwords import Argon2Params


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(env: Mapping[str, str], name: str) -> tuple[Network, ...]:
    found = []
    for part in (env.get(name) or "").split(","):
        if part.strip():
            try:
                found.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise SettingsError(f"{name} must be comma-separated CIDRs") from None
    return tuple(found)


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}")
    return value


def _smtp_url(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    try:
        parts.port  # noqa: B018 -- raises on a malformed port
    except ValueError:
        raise SettingsError(f"{name} has a malformed port") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        # Never echo the value: it may carry a password.
        raise SettingsError(f"{name} must be smtp://host[:port] or smtps://host[:port]")
    return raw


def _blob_url(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        check_blob_url(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None
    return raw


def _sip_listen(env: Mapping[str, str], name: str, default: str) -> tuple[str, int] | None:
    """`host:port` or `[v6]:port`; `off`: no SIP listener on this node."""
    raw = (env.get(name) or default).strip()
    if raw.lower() == "off":
        return None
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise SettingsError(f"{name} must be host:port, [v6-address]:port or off")
    return host, int(port)


def _sip_advertise(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an IP address (SDP's c= names one)") from None
    if address.is_unspecified:
        raise SettingsError(f"{name} must be an address peers can send to, not {raw}")
    return raw


def _port_range(env: Mapping[str, str], name: str, default: tuple[int, int]) -> tuple[int, int]:
    """`FIRST-LAST`, holding at least one even port and the odd one above it (RTP, RTCP)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    first, sep, last = raw.partition("-")
    if not (sep and first.isascii() and first.isdigit() and last.isascii() and last.isdigit()):
        raise SettingsError(f"{name} must be FIRST-LAST, as in 20000-20999")
    low, high = int(first), int(last)
    if not 1024 <= low < high <= 65535 or low + low % 2 + 1 > high:
        raise SettingsError(f"{name} must hold an even port and its odd neighbour in 1024-65535")
    return low, high


# A data region's name: eu-central, us-east-1.
REGION_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
_FIELD = re.compile(r"^[a-z_]{1,32}$")  # a field name fit to be named in an error


@dataclass(frozen=True)
class Region:
    """A data region of TELEPHONY_REGIONS: where its recordings' blobs live."""

    name: str
    blob_url: str = dataclasses.field(repr=False)
    # Checked, not used: every region's rows are in the one database (README "Data regions").
    database_url: str | None = dataclasses.field(default=None, repr=False)


def _no_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    names = [name for name, _ in pairs]
    for name in names:
        if names.count(name) > 1:
            shown = name if re.match(REGION_PATTERN, name) or _FIELD.match(name) else "a name"
            raise SettingsError(f"TELEPHONY_REGIONS names {shown} twice")
    return dict(pairs)


def _regions(env: Mapping[str, str], name: str, default_region: str) -> tuple[Region, ...]:
    """TELEPHONY_REGIONS, a JSON object: {"eu-central": {"blob_url": "s3://…"}, "us-east":
    {"blob_url": "file:///…", "database_url": "postgresql://…"}}. Errors name the region
    and the field, never a URL (configuration: hosts, buckets, folders)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return ()
    shape = f'{name} is a JSON object: {{"eu-central": {{"blob_url": "s3://…"}}, …}}'
    try:
        data = json.loads(raw, object_pairs_hook=_no_repeats)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{shape}; not JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(data, dict) or not data:
        raise SettingsError(shape)
    if (env.get("TELEPHONY_BLOB_URL") or "").strip():
        raise SettingsError(
            f"set TELEPHONY_BLOB_URL or {name}, not both: with regions, each names its own"
        )
    found: list[Region] = []
    stores: set[tuple[str, ...]] = set()
    for region, spec in data.items():
        if not re.match(REGION_PATTERN, region):
            raise SettingsError(
                f"{name}: a region's name is lower-case letters, digits and '-', from a letter"
                " (eu-central)"
            )
        where = f"{name}: region {region}"
        if not isinstance(spec, dict):
            raise SettingsError(f'{where} is an object: {{"blob_url": "s3://…"}}')
        unknown = sorted(set(spec) - {"blob_url", "database_url"})
        if unknown:
            shown = unknown[0] if _FIELD.match(unknown[0]) else "a field"
            raise SettingsError(f"{where} has {shown}, which is neither blob_url nor database_url")
        blob_url = spec.get("blob_url")
        if not isinstance(blob_url, str) or not blob_url.strip():
            raise SettingsError(f"{where} names no blob_url")
        try:
            check_blob_url(blob_url.strip())
        except ValueError as exc:
            raise SettingsError(f"{where}: blob_url: {exc}") from None
        identity = store_identity(blob_url.strip())
        if identity in stores:
            raise SettingsError(f"{where}: its blob_url is another region's store")
        stores.add(identity)
        database_url = spec.get("database_url")
        if database_url is not None and (
            not isinstance(database_url, str)
            or urlsplit(database_url.strip()).scheme not in ("postgresql", "postgres")
        ):
            raise SettingsError(f"{where}: database_url is a postgresql:// URL")
        found.append(Region(region, blob_url.strip(), database_url and database_url.strip()))
    if default_region not in {r.name for r in found}:
        raise SettingsError(f"{name} has no region named by TELEPHONY_DATA_REGION (the default)")
    return tuple(found)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None  # None: the embedded cluster under data_dir
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8080
    data_region: str = "eu-central"
    argon2: Argon2Params = dataclasses.field(default_factory=Argon2Params)
    session_ttl_s: int = 12 * 3600
    invitation_ttl_s: int = 7 * 24 * 3600
    # Login throttling (S2): failures counted over a sliding window.
    login_window_s: int = 15 * 60
    login_max_failures_per_email: int = 5
    login_max_failures_per_address: int = 30
    # Signups and invitation acceptances per source address: each costs a password hash.
    signup_window_s: int = 3600
    signup_max_per_address: int = 10
    invitation_max_per_address: int = 10  # per login_window_s
    log_retention_days: int = 60  # S3
    purge_interval_s: int = 24 * 3600
    # Recording retention, blob removal and D4: how often the retention pass runs.
    retention_interval_s: int = 3600
    # How often this node compacts finished recordings in an object store; 0: never (leave
    # it to other nodes, e.g. to keep media nodes for media).
    compaction_interval_s: int = 60
    termination_grace_days: int = 30  # after termination, recordings stay this long for export
    staff_webhook_url: str | None = None
    staff_webhook_timeout_s: float = 10.0
    outbox_poll_s: float = 5.0
    outbox_max_attempts: int = 20
    webhook_allow_private: bool = False
    # Customer webhooks: one attempt's time limit, how long retries go on, accounts at once.
    webhook_timeout_s: float = 10.0
    webhook_retry_window_s: int = 24 * 3600
    webhook_concurrency: int = 8
    max_body_bytes: int = 64 * 1024
    access_log_to_db: bool = True
    # Proxies whose X-Forwarded-For is believed (CIDRs): the client is the right-most
    # hop none of them is. Empty: the peer address is the client.
    trusted_proxies: tuple[Network, ...] = ()
    media_token_ttl_s: int = 3600  # a call's media stream must connect within this time
    public_url: str | None = None  # base URL clients reach us at; default: the request's host
    # Base64 master keys (DESIGN "Keys"); None: a generated development key under data_dir.
    master_key: str | None = dataclasses.field(default=None, repr=False)
    previous_master_keys: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    node_id: str | None = None  # names this process among nodes sharing the database
    # A live recording's audio moves from the node's spool to the blob store this often.
    spool_part_s: float = 10.0
    header_timeout_s: float = 10.0  # a request's head must arrive whole this fast
    event_loop: str = "uvloop"  # "uvloop" or "asyncio": the loop `serve` runs on
    # E-mail: smtp://[user:pass@]host[:port] (STARTTLS when offered) or smtps://… (TLS from
    # the first byte). None: `serve` starts the local mail drop writing data_dir/mail.
    smtp_url: str | None = dataclasses.field(default=None, repr=False)
    smtp_username: str | None = None  # when the URL carries none
    smtp_password: str | None = dataclasses.field(default=None, repr=False)
    smtp_timeout_s: float = 30.0
    smtp_ca_file: str | None = None  # a private CA the relay's certificate is signed by
    mail_from: str = "Telephony <no-reply@localhost>"
    password_reset_ttl_s: int = 30 * 60
    staff_grant_s: int = 8 * 3600  # S5: how long an approved staff access request lasts
    # Where recordings' sealed parts go: file:///folder or s3://bucket/prefix?endpoint=…
    # None: the filesystem store under data_dir/blobs. S3 credentials: AWS_* variables.
    blob_url: str | None = None
    # TELEPHONY_REGIONS: each data region's blob store (README "Data regions"). Empty: one
    # region, data_region, stored at blob_url. With regions, blob_url is the default
    # region's store, where keys of no recording (backups/…) go.
    regions: tuple[Region, ...] = ()
    # S7: a new recording is refused (503 storage-low), and /readyz says not ready, while
    # the blob store's or the spool's filesystem has less free space than this.
    storage_reserve_mb: int = 256
    # S8: backups older than this are removed, with the WAL and blob copies only they
    # needed ("deleted from backups when they expire"); `serve` makes one this often.
    backup_retention_days: int = 30
    backup_interval_s: int = 24 * 3600
    # SIP and SIPREC ingest (SIP.md): UDP and TCP on one address, None ("off"): none here.
    sip_listen: tuple[str, int] | None = ("127.0.0.1", 5060)
    rtp_ports: tuple[int, int] = (20000, 20999)  # even RTP port, RTCP on the odd one above
    # The address SDP answers and Contact name (behind NAT, the public one); default: the
    # listen address, which must then not be a wildcard.
    sip_advertise: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        default = cls()
        argon2 = Argon2Params(
            memory_kib=_int(env, "TELEPHONY_ARGON2_MEMORY_KIB", default.argon2.memory_kib, 8),
            iterations=_int(env, "TELEPHONY_ARGON2_ITERATIONS", default.argon2.iterations, 1),
            lanes=_int(env, "TELEPHONY_ARGON2_LANES", default.argon2.lanes, 1),
        )
        data_region = env.get("TELEPHONY_DATA_REGION") or default.data_region
        regions = _regions(env, "TELEPHONY_REGIONS", data_region)
        return cls(
            database_url=env.get("TELEPHONY_DATABASE_URL") or None,
            data_dir=Path(env.get("TELEPHONY_DATA_DIR") or default.data_dir),
            host=env.get("TELEPHONY_HOST") or default.host,
            port=_int(env, "TELEPHONY_PORT", default.port, 0),
            data_region=data_region,
            argon2=argon2,
            session_ttl_s=_int(env, "TELEPHONY_SESSION_TTL_S", default.session_ttl_s, 60),
            log_retention_days=_int(
                env, "TELEPHONY_LOG_RETENTION_DAYS", default.log_retention_days, 1
            ),
            retention_interval_s=_int(
                env, "TELEPHONY_RETENTION_INTERVAL_S", default.retention_interval_s, 10
            ),
            compaction_interval_s=_int(
                env, "TELEPHONY_COMPACTION_INTERVAL_S", default.compaction_interval_s, 0
            ),
            termination_grace_days=_int(
                env, "TELEPHONY_TERMINATION_GRACE_DAYS", default.termination_grace_days, 0
            ),
            staff_webhook_url=env.get("TELEPHONY_STAFF_WEBHOOK_URL") or None,
            webhook_allow_private=_bool(env, "TELEPHONY_WEBHOOK_ALLOW_PRIVATE"),
            webhook_timeout_s=_int(
                env, "TELEPHONY_WEBHOOK_TIMEOUT_S", int(default.webhook_timeout_s), 1
            ),
            webhook_retry_window_s=_int(
                env, "TELEPHONY_WEBHOOK_RETRY_WINDOW_S", default.webhook_retry_window_s, 60
            ),
            webhook_concurrency=_int(
                env, "TELEPHONY_WEBHOOK_CONCURRENCY", default.webhook_concurrency, 1
            ),
            trusted_proxies=_networks(env, "TELEPHONY_TRUSTED_PROXIES"),
            media_token_ttl_s=_int(
                env, "TELEPHONY_MEDIA_TOKEN_TTL_S", default.media_token_ttl_s, 10
            ),
            public_url=(env.get("TELEPHONY_PUBLIC_URL") or "").rstrip("/") or None,
            master_key=env.get("TELEPHONY_MASTER_KEY") or None,
            previous_master_keys=tuple(
                k for k in (env.get("TELEPHONY_MASTER_KEY_PREVIOUS") or "").split(",") if k.strip()
            ),
            node_id=env.get("TELEPHONY_NODE_ID") or None,
            event_loop=_choice(env, "TELEPHONY_EVENT_LOOP", ("uvloop", "asyncio"), "uvloop"),
            smtp_url=_smtp_url(env, "TELEPHONY_SMTP_URL"),
            smtp_username=env.get("TELEPHONY_SMTP_USERNAME") or None,
            smtp_password=env.get("TELEPHONY_SMTP_PASSWORD") or None,
            smtp_ca_file=env.get("TELEPHONY_SMTP_CA_FILE") or None,
            mail_from=env.get("TELEPHONY_MAIL_FROM") or default.mail_from,
            staff_grant_s=_int(env, "TELEPHONY_STAFF_GRANT_S", default.staff_grant_s, 60),
            blob_url=next((r.blob_url for r in regions if r.name == data_region), None)
            if regions
            else _blob_url(env, "TELEPHONY_BLOB_URL"),
            regions=regions,
            storage_reserve_mb=_int(
                env, "TELEPHONY_STORAGE_RESERVE_MB", default.storage_reserve_mb, 0
            ),
            backup_retention_days=_int(
                env, "TELEPHONY_BACKUP_RETENTION_DAYS", default.backup_retention_days, 1
            ),
            backup_interval_s=_int(
                env, "TELEPHONY_BACKUP_INTERVAL_S", default.backup_interval_s, 60
            ),
            spool_part_s=_int(env, "TELEPHONY_SPOOL_PART_S", int(default.spool_part_s), 1),
            sip_listen=_sip_listen(env, "TELEPHONY_SIP_LISTEN", "127.0.0.1:5060"),
            rtp_ports=_port_range(env, "TELEPHONY_RTP_PORTS", default.rtp_ports),
            sip_advertise=_sip_advertise(env, "TELEPHONY_SIP_ADVERTISE"),
        )

    def __post_init__(self) -> None:
        if self.sip_listen and self.sip_advertise is None:
            with_wildcard = self.sip_listen[0] in ("0.0.0.0", "::")  # noqa: S104
            if with_wildcard:
                raise SettingsError(
                    "TELEPHONY_SIP_LISTEN on every address needs TELEPHONY_SIP_ADVERTISE: "
                    "SDP must name one address peers send RTP to"
                )

    @property
    def sip_address(self) -> str | None:
        """What SDP and Contact name: sip_advertise, else the listen host (not a wildcard)."""
        if self.sip_listen is None:
            return None
        return self.sip_advertise or self.sip_listen[0]

    def region_names(self) -> tuple[str, ...]:
        """The regions an account may choose: the configured ones, or the one."""
        return tuple(r.name for r in self.regions) or (self.data_region,)

    def region_blob_urls(self) -> dict[str, str] | None:
        """Name → blob URL of each configured region; None with one region (blob_url)."""
        return {r.name: r.blob_url for r in self.regions} or None

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def master_keys(settings: Settings) -> MasterKeys:
    """The configured master keys, or the development key file (created when missing)."""
    if settings.master_key is None:
        current = load_or_create_dev_key(settings.data_dir / "master.key")
    else:
        current = decode_master_key(settings.master_key)
    previous = tuple(
        decode_master_key(k, "TELEPHONY_MASTER_KEY_PREVIOUS") for k in settings.previous_master_keys
    )
    return MasterKeys(current, previous)
