"""Fleet mode: many workers share one PostgreSQL database (records, manifests, jobs, locks) and
one S3-compatible bucket (blobs by digest); each worker's home is a local cache of the bucket.

Importing this package does not import boto3; the bucket client is built on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldepot.fleet._fleet import EvictResult, Fleet, PullResult, worker_id
from modeldepot.fleet._gc import BucketGcReport, FleetStatus, collect, status

if TYPE_CHECKING:
    from modeldepot._db import Database
    from modeldepot.config import DepotConfig
    from modeldepot.storage import ContentStore


def open_fleet(config: DepotConfig, db: Database, storage: ContentStore) -> Fleet:
    """The fleet of ``config.blob_remote`` (which must be set), attached to ``storage``."""
    from modeldepot.fleet._s3 import S3BlobTier

    assert config.blob_remote is not None
    tier = S3BlobTier(
        config.blob_remote, endpoint=config.blob_remote_endpoint, concurrency=config.max_parallel_downloads
    )
    return Fleet(config, db, storage, tier)


__all__ = [
    "BucketGcReport",
    "EvictResult",
    "Fleet",
    "FleetStatus",
    "PullResult",
    "collect",
    "open_fleet",
    "status",
    "worker_id",
]
