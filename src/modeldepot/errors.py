"""Every error a user can cause is a ``ModelDepotError``; each also inherits the natural stdlib type.

Exception tree::

    ModelDepotError
    ├── ConfigurationError (ValueError)            bad settings / settings file
    ├── InvalidModelConfigException (ValueError)   a record that does not validate
    ├── UnknownModelException (KeyError)           no record with that key / name
    ├── DuplicateModelException                    key, path or hash already registered
    │   └── AmbiguousModelException (ValueError)   a name/base/type that matches several records
    ├── ModelNotFoundException (FileNotFoundError) a record's files are missing
    ├── DatabaseError                              foreign, corrupt or too-new database file
    ├── HashingError (OSError)                     a file cannot be hashed
    │   ├── HashingPathNotFoundError (FileNotFoundError)
    │   └── HashingPermissionError (PermissionError)
    ├── IdentificationError (ValueError)           malformed model file
    │   ├── InvalidSafetensorsError
    │   └── UnsafePickleError                      a pickle importing dangerous globals
    ├── StorageError                               content-addressed store problems
    │   ├── BlobCorruptError
    │   └── UnsafePathError (ValueError)           ../ or absolute paths in a name or manifest
    ├── DownloadError                              transport / HTTP failures
    │   ├── RemoteAccessError (PermissionError)    401/403: token missing or wrong
    │   ├── RemoteNotFoundError (FileNotFoundError) 404/410
    │   │   ├── NoLoadableFilesError               a repo with no weights for the asked variant
    │   │   └── UnknownMetadataException           no metadata: the repo or version does not exist
    │   ├── IntegrityError                         sha256 mismatch after download
    │   ├── BlockedAddressError                    a hop resolves to a private address (403 in the API)
    │   └── InsufficientSpaceError (OSError)
    ├── UnknownJobIDException (KeyError)
    ├── InvalidMetadataError (ValueError)          JSON that is not model metadata
    ├── InvalidReferenceError (ValueError)         a model reference entry or file that does not validate
    ├── InvalidSourceError (ValueError)            a source string that matches nothing
    │   └── UnsafeSourcePathError (also UnsafePathError)  ../ in a repo subfolder or file name
    ├── LoaderNotFoundError (LookupError)          no loader for (base, type, format)
    ├── SubmodelRequiredError (ValueError)         a pipeline loaded without naming its part
    ├── InvalidSubmodelError (ValueError)          a part the model does not have
    ├── ModelLoadError                             diffusers/transformers/torch failed to build it
    ├── InvalidImageError (ValueError)             an image a model cannot take (layout, size)
    ├── ServiceInputError (ValueError)             a service argument out of range (steps, strength)
    ├── WrongModelTypeError (TypeError)            a model given to a service that cannot use it
    ├── TrainingError                              a training run that cannot start or go on
    │   └── TrainingDataError (ValueError)         a dataset folder, image, caption or score file at fault
    ├── DeviceOutOfMemoryError (MemoryError)       the device cannot hold the model
    ├── FleetError                                 the fleet's bucket cannot be reached or used
    ├── TorchNotInstalledError (ImportError)       loading needs the torch extra
    └── NotAllowedError (PermissionError)          refused by policy (private URL, path outside roots)
"""

from __future__ import annotations

from pathlib import Path


class ModelDepotError(Exception):
    """Base of every error modeldepot raises on purpose."""

    def __str__(self) -> str:
        # KeyError's str() adds quotes; our messages are for people.
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigurationError(ModelDepotError, ValueError):
    """Settings or a settings file are invalid."""


class InvalidModelConfigException(ModelDepotError, ValueError):
    """A model record failed validation; ``field`` names the first offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownModelException(ModelDepotError, KeyError):
    """No model with that key (or name)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class DuplicateModelException(ModelDepotError):
    """A model with this key, path or content is already registered."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class AmbiguousModelException(DuplicateModelException, ValueError):
    """Several records match a name, base and type (``load_model_by_attr``, the normalized view's
    ``get_model_by_name``). A ``ValueError``, as document 002 says of ``load_model_by_attr``, and
    still a :class:`DuplicateModelException` for code that caught that before; ``keys`` lists them."""

    def __init__(self, message: str, key: str | None = None, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message, key=key or (keys[0] if keys else None))
        self.keys = keys


class ModelNotFoundException(ModelDepotError, FileNotFoundError):
    """The files of a registered model are missing."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class DatabaseError(ModelDepotError):
    """The database cannot be opened: not ours, corrupt, or from a newer version."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = path


class HashingError(ModelDepotError, OSError):
    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class IdentificationError(ModelDepotError, ValueError):
    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class InvalidSafetensorsError(IdentificationError):
    """A .safetensors file whose header is malformed."""


class UnsafePickleError(IdentificationError):
    """A pickle file that imports globals outside the allow-list."""


class StorageError(ModelDepotError):
    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class BlobCorruptError(StorageError):
    """A blob whose content no longer matches its digest."""


class UnsafePathError(StorageError, ValueError):
    """A relative path that would escape its folder."""


class DownloadError(ModelDepotError):
    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class RemoteAccessError(DownloadError, PermissionError):
    """401/403 from a remote: a token is missing or not allowed."""


class RemoteNotFoundError(DownloadError, FileNotFoundError):
    """404/410 from a remote."""


class UnknownMetadataException(RemoteNotFoundError):
    """The repo, model or model version has no metadata because it does not exist (or is hidden)."""


class InvalidMetadataError(ModelDepotError, ValueError):
    """A JSON text that is not model metadata (nor a stored Hugging Face / Civitai answer)."""


class InvalidReferenceError(ModelDepotError, ValueError):
    """A model reference (Nataili / AI Horde JSON) or one of its entries does not validate.

    ``key`` is the entry at fault (None for the file as a whole), ``field`` its dotted field path.
    """

    def __init__(self, message: str, key: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.field = field


class IntegrityError(DownloadError):
    """Downloaded bytes do not match the expected hash."""


class BlockedAddressError(DownloadError):
    """A URL (or a redirect hop) resolves to a private address and its host is not trusted.

    Not a ``PermissionError``/``OSError`` on purpose: connection errors are retried, this never is.
    """


class InsufficientSpaceError(DownloadError, OSError):
    """Not enough free disk space for the download or install."""


class HashingPathNotFoundError(HashingError, FileNotFoundError):
    """The path to hash does not exist (also a ``FileNotFoundError``)."""


class HashingPermissionError(HashingError, PermissionError):
    """The path to hash cannot be read (also a ``PermissionError``)."""


class NoLoadableFilesError(RemoteNotFoundError):
    """A repo (or the asked part of it) has no files this variant can load."""


class UnknownJobIDException(ModelDepotError, KeyError):
    def __init__(self, message: str, job_id: object = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class InvalidSourceError(ModelDepotError, ValueError):
    """A source string that is not a path, URL, repo id or Civitai reference."""


class UnsafeSourcePathError(InvalidSourceError, UnsafePathError):
    """A subfolder or file name in a source that would escape its repo (``..``, absolute paths)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        UnsafePathError.__init__(self, message, path)


class LoaderNotFoundError(ModelDepotError, LookupError):
    """No loader registered for a (base, type, format) triple."""


class SubmodelRequiredError(ModelDepotError, ValueError):
    """A main (pipeline) model was asked for without naming the part to load."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidSubmodelError(ModelDepotError, ValueError):
    """The submodel asked for does not exist in that model (or makes no sense for its type)."""

    def __init__(self, message: str, key: str | None = None, submodel: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.submodel = submodel


class ModelLoadError(ModelDepotError):
    """A foreign library (diffusers, transformers, torch) failed to build the model from its files."""

    def __init__(self, message: str, key: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.path = path


class InvalidImageError(ModelDepotError, ValueError):
    """An image (tensor) a model cannot take: wrong layout or size (a face restorer's is fixed)."""


class ServiceInputError(ModelDepotError, ValueError):
    """A service argument that cannot work: steps < 1, strength outside [0, 1], an unknown scheduler."""


class WrongModelTypeError(ModelDepotError, TypeError):
    """A model given to a service that cannot use it (a VAE to ``Upscaler``); ``.key`` names it,
    ``.expected`` lists what the service takes."""

    def __init__(self, message: str, key: str | None = None, expected: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.key = key
        self.expected = expected


class FleetError(ModelDepotError):
    """The fleet's S3-compatible bucket cannot be reached or used (no credentials, no such bucket,
    access denied, an endpoint that does not answer); ``url`` names the bucket, never a secret."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class TrainingError(ModelDepotError):
    """A training run that cannot start or go on: an unsupported base, a checkpoint of another run."""


class TrainingDataError(TrainingError, ValueError):
    """Training data at fault: an empty folder, an unreadable image, a missing caption, a bad score
    file; ``.path`` names the file or folder."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class DeviceOutOfMemoryError(ModelDepotError, MemoryError):
    """The execution device cannot hold the model even after offloading every unlocked model."""


class TorchNotInstalledError(ModelDepotError, ImportError):
    """Loading models needs the ``torch`` extra: ``pip install 'modeldepot[torch]'``."""


class NotAllowedError(ModelDepotError, PermissionError):
    """Refused by policy: private address, path outside the allowed roots, missing API key."""


__all__ = [
    "AmbiguousModelException",
    "BlobCorruptError",
    "BlockedAddressError",
    "ConfigurationError",
    "DatabaseError",
    "DeviceOutOfMemoryError",
    "DownloadError",
    "DuplicateModelException",
    "FleetError",
    "HashingError",
    "HashingPathNotFoundError",
    "HashingPermissionError",
    "IdentificationError",
    "InsufficientSpaceError",
    "IntegrityError",
    "InvalidImageError",
    "InvalidMetadataError",
    "InvalidModelConfigException",
    "InvalidReferenceError",
    "InvalidSafetensorsError",
    "InvalidSourceError",
    "InvalidSubmodelError",
    "LoaderNotFoundError",
    "ModelDepotError",
    "ModelLoadError",
    "ModelNotFoundException",
    "NoLoadableFilesError",
    "NotAllowedError",
    "RemoteAccessError",
    "RemoteNotFoundError",
    "ServiceInputError",
    "StorageError",
    "SubmodelRequiredError",
    "TorchNotInstalledError",
    "TrainingDataError",
    "TrainingError",
    "UnknownJobIDException",
    "UnknownMetadataException",
    "UnknownModelException",
    "UnsafePathError",
    "UnsafePickleError",
    "UnsafeSourcePathError",
    "WrongModelTypeError",
]
