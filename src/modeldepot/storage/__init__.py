"""The content-addressed model store: blobs, manifests, links, refcounts, gc, verify, du, views.

``ContentStore`` keeps every model's bytes once in ``blobs/`` and materialises models as
ordinary files under ``models/``; ``NormalizedStore`` is the seed's normalized view (pipelines
made of shared parts); ``build_view`` exposes models to A1111 / ComfyUI as symlink trees.
"""

from modeldepot.storage._manifests import hash_tree, walk_source
from modeldepot.storage._normalized import ModelInfo, NormalizedStore, PartInfo
from modeldepot.storage._store import ContentStore
from modeldepot.storage._views import ScanEntry, build_view, scan_tree, view_folder_for
from modeldepot.storage.base import (
    BlobInfo,
    DuReport,
    GcReport,
    ManifestEntry,
    MaterialiseResult,
    ModelManifest,
    ModelUsage,
    StagedModel,
    VerifyReport,
    ViewReport,
)

__all__ = [
    "BlobInfo",
    "ContentStore",
    "DuReport",
    "GcReport",
    "ManifestEntry",
    "MaterialiseResult",
    "ModelInfo",
    "ModelManifest",
    "ModelUsage",
    "NormalizedStore",
    "PartInfo",
    "ScanEntry",
    "StagedModel",
    "VerifyReport",
    "ViewReport",
    "build_view",
    "hash_tree",
    "scan_tree",
    "view_folder_for",
    "walk_source",
]
