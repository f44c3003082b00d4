"""Remote sources: parsing what a user names, and clients for Hugging Face and Civitai.

The install service turns a source into downloads; this package only answers "what is it, which
files does it need, and what does the remote say about it" (``metadata``: the seed's
``HuggingFaceMetadataFetch`` / ``CivitaiMetadataFetch`` and ``AnyModelRepoMetadata``).
"""

from modeldepot.remote.civitai import (
    CivitaiClient,
    CivitaiFile,
    CivitaiModel,
    CivitaiModelSummary,
    CivitaiVersion,
    choose_file,
    metadata_for_record,
    normalise_hash,
)
from modeldepot.remote.civitai_map import BaseMapping, map_civitai_base, map_civitai_type
from modeldepot.remote.hf import (
    HFFile,
    HFRepoInfo,
    HuggingFaceClient,
    cached_login_token,
    hf_metadata_for_record,
    resolve_hf_token,
)
from modeldepot.remote.hf_select import NoLoadableFilesError, Selection, select_hf_files, select_preferred
from modeldepot.remote.metadata import (
    AnyModelRepoMetadata,
    AnyModelRepoMetadataValidator,
    CivitaiMetadata,
    CivitaiMetadataFetch,
    CommercialUsage,
    HuggingFaceMetadata,
    HuggingFaceMetadataFetch,
    InvalidMetadataError,
    LicenseRestrictions,
    ModelMetadataBase,
    ModelMetadataFetchBase,
    RemoteModelFile,
    UnknownMetadataException,
    metadata_from_json,
    metadata_json_for_record,
)
from modeldepot.remote.sources import (
    AnyModelSource,
    CivitaiModelSource,
    HFModelSource,
    LocalModelSource,
    ModelSource,
    UnsafeSourcePathError,
    URLModelSource,
    parse_source,
)

__all__ = [
    "AnyModelRepoMetadata",
    "AnyModelRepoMetadataValidator",
    "AnyModelSource",
    "BaseMapping",
    "CivitaiClient",
    "CivitaiFile",
    "CivitaiMetadata",
    "CivitaiMetadataFetch",
    "CivitaiModel",
    "CivitaiModelSource",
    "CivitaiModelSummary",
    "CivitaiVersion",
    "CommercialUsage",
    "HFFile",
    "HFModelSource",
    "HFRepoInfo",
    "HuggingFaceClient",
    "HuggingFaceMetadata",
    "HuggingFaceMetadataFetch",
    "InvalidMetadataError",
    "LicenseRestrictions",
    "LocalModelSource",
    "ModelMetadataBase",
    "ModelMetadataFetchBase",
    "ModelSource",
    "NoLoadableFilesError",
    "RemoteModelFile",
    "Selection",
    "URLModelSource",
    "UnknownMetadataException",
    "UnsafeSourcePathError",
    "cached_login_token",
    "choose_file",
    "hf_metadata_for_record",
    "map_civitai_base",
    "map_civitai_type",
    "metadata_for_record",
    "metadata_from_json",
    "metadata_json_for_record",
    "normalise_hash",
    "parse_source",
    "resolve_hf_token",
    "select_hf_files",
    "select_preferred",
]
