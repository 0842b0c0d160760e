"""Each data region's blob store, as /readyz, /metrics and the access copy (D1) name them:
the configured regions' (TELEPHONY_REGIONS), or the one store as the default region's."""

from __future__ import annotations

from aiohttp import web

from storage.blobs.regions import RegionStore, by_region, descriptions
from storage.blobs.stores import describe_blob_url
from telephony.web.appkeys import BLOBS, SETTINGS


def blob_regions(app: web.Application) -> dict[str, RegionStore]:
    settings = app[SETTINGS]
    where = describe_blob_url(settings.blob_url, settings.data_dir / "blobs")
    return by_region(app[BLOBS], settings.data_region, where)


def store_descriptions(app: web.Application) -> dict[str, str]:
    """Region → where its blobs are, without credentials, endpoint or path above a folder."""
    return descriptions(blob_regions(app))
