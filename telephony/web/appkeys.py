"""Every `web.AppKey`: state lives on the app, created and closed in cleanup_ctx."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry

from storage.backups import BackupLocation, DeletionJournal
from storage.blobs.protocol import BlobStore
from storage.blobs.spool import Spool
from storage.keys.passwords import PasswordHasher
from storage.keys.providers import KeyProvider
from storage.securitylog import AccessEntry
from telephony.domain.roles import Principal
from telephony.i18n import Catalogue
from telephony.media.sip.uas import SipListener
from telephony.metrics import Metrics
from telephony.recorder.hub import MediaHub
from telephony.settings import Settings
from telephony.usecases.backups import BackupStatus
from telephony.web.routes import Route
from telephony.web.shared_reading import SharedReading

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
WRITER_POOL = web.AppKey("writer_pool", asyncpg.Pool)  # the recorders' chunk rows
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", Metrics)
ACCESS_QUEUE = web.AppKey("access_queue", asyncio.Queue[AccessEntry])
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])
KEYS: web.AppKey[KeyProvider] = web.AppKey("keys")
BLOBS: web.AppKey[BlobStore] = web.AppKey("blobs")
SPOOL = web.AppKey("spool", Spool)
HUB = web.AppKey("hub", MediaHub)
SIP = web.AppKey("sip", SipListener)  # only where TELEPHONY_SIP_LISTEN is not off
BACKUPS = web.AppKey("backups", BackupLocation)  # where backups and the journal live (S8)
JOURNAL = web.AppKey("journal", DeletionJournal)  # deletions a restore re-applies
BACKUP_STATUS = web.AppKey("backup_status", BackupStatus)  # the last good backup, for /metrics
# Free bytes by store, one probe shared by whoever asks meanwhile (capacity.free_space).
FREE_SPACE: web.AppKey[SharedReading[dict[str, int]]] = web.AppKey("free_space")
HASHER = web.AppKey("hasher", PasswordHasher)  # Argon2id on a thread of its own
OPENAPI = web.AppKey("openapi", dict[str, Any])
CATALOGUE = web.AppKey("catalogue", Catalogue)  # the en/pl messages of pages and mail
# Each handler's declaration (who may call it), for middlewares that must know.
ROUTE_INDEX: web.AppKey[dict[Any, Route]] = web.AppKey("route_index")

# Per-request state.
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
