"""Settings: one ``DepotConfig`` built once and passed into every service.

Priority, highest first: constructor arguments > ``MODELDEPOT_*`` environment variables >
``modeldepot.yaml`` in the home folder > defaults. Nothing here reads the environment at import.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from modeldepot._bucket import parse_bucket_url
from modeldepot._urls import default_port, parse_host
from modeldepot.errors import ConfigurationError

SETTINGS_FILE = "modeldepot.yaml"
ENV_PREFIX = "MODELDEPOT_"
LinkMode = Literal["reflink", "hardlink", "symlink", "copy"]
DEFAULT_LINK_MODES: tuple[LinkMode, ...] = ("reflink", "hardlink", "symlink", "copy")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
#: Fields never written back to the settings file.
SECRET_FIELDS = frozenset({"remote_api_tokens", "api_key"})


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``MODELDEPOT_HOME``, else ``$XDG_CACHE_HOME/modeldepot``, else ``~/.cache/modeldepot``."""
    env = os.environ if environ is None else environ
    if env.get("MODELDEPOT_HOME"):
        return Path(env["MODELDEPOT_HOME"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "modeldepot"
    return Path("~/.cache/modeldepot").expanduser()


class RemoteToken(BaseModel):
    """A bearer token sent to one host (or one domain). Never persisted.

    ``host`` is ``civitai.com`` (that host only), ``civitai.com:8443`` (and that port), or
    ``*.example.com`` (``example.com`` and all its subdomains). ``url_regex`` is kept for settings
    written for InvokeAI; it must match the URL's whole host name (or ``host:port``), never just a
    piece of the URL, so ``?utm_source=civitai`` or ``other-host/civitai-loras/`` get no token.
    """

    model_config = ConfigDict(frozen=True)

    host: str | None = None
    url_regex: str | None = None
    token: SecretStr

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().lower().rstrip(".")
        bare = v[2:] if v.startswith("*.") else v
        if not bare or "/" in bare or "*" in bare or "@" in bare:
            raise ValueError(f"host {v!r} must be a host name, host:port or *.domain")
        return v

    @field_validator("url_regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"url_regex {v!r} is not a valid regular expression: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _one_target(self) -> RemoteToken:
        if (self.host is None) == (self.url_regex is None):
            raise ValueError("a remote_api_tokens entry needs exactly one of host or url_regex")
        return self

    def matches(self, host: str, port: int) -> bool:
        """Does this token belong to ``host:port``?"""
        host = host.lower().rstrip(".")
        with_port = f"{host}:{port}"
        if self.url_regex is not None:
            return bool(re.fullmatch(self.url_regex, host, re.IGNORECASE)) or bool(
                re.fullmatch(self.url_regex, with_port, re.IGNORECASE)
            )
        assert self.host is not None
        if self.host.startswith("*."):
            domain = self.host[2:]
            return host == domain or host.endswith("." + domain)
        return self.host in (host, with_port)


class _YamlSource(PydanticBaseSettingsSource):
    """Reads ``modeldepot.yaml`` from the home folder chosen by the higher-priority sources."""

    def __init__(self, settings_cls: type[BaseSettings], init_kwargs: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._init_kwargs = init_kwargs

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        home = self._init_kwargs.get("home") or default_home()
        path = Path(home).expanduser() / SETTINGS_FILE
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"settings file {path} is not valid YAML: not UTF-8 text ({exc.reason})") from None
        except yaml.YAMLError as exc:
            # Only where and what: str(exc) quotes the offending lines (several lines of output,
            # and possibly a token someone pasted into the file).
            raise ConfigurationError(f"settings file {path} is not valid YAML: {_yaml_problem(exc)}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigurationError(f"settings file {path} must hold a mapping of settings")
        unknown = sorted(set(data) - set(self.settings_cls.model_fields))
        if unknown:
            raise ConfigurationError(f"settings file {path}: unknown setting(s) {', '.join(unknown)}")
        return {k: v for k, v in data.items() if k not in SECRET_FIELDS}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


def _env_var(field: str) -> str | None:
    """The ``MODELDEPOT_*`` variable that sets ``field``, if the environment has it (any case,
    as pydantic-settings matches it)."""
    wanted = (ENV_PREFIX + field).upper()
    return next((name for name in os.environ if name.upper() == wanted), None)


def _settings_path(values: Mapping[str, Any]) -> Path:
    home = values.get("home") or default_home()
    return Path(home).expanduser() / SETTINGS_FILE


def _where(field: str, values: Mapping[str, Any]) -> str:
    """Where the value of ``field`` came from, highest priority first, for the message."""
    if field in values:
        return " (argument)"
    env = _env_var(field)
    if env:
        return f" ({env})"
    path = _settings_path(values)
    try:
        in_file = path.is_file() and field in (yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError):
        in_file = False
    return f" (in {path})" if in_file else ""


# The example must be one that works: a url_regex has to match the whole host since issue 11.
_JSON_HINTS = {"remote_api_tokens": 'expected a JSON list like [{"host": "civitai.com", "token": "..."}]'}


def settings_error(exc: ValidationError | SettingsError, values: Mapping[str, Any]) -> ConfigurationError:
    """One line naming each bad setting, where it came from (argument, ``MODELDEPOT_*`` variable
    or settings file) and what is wrong; never the value itself (it may be a secret)."""
    if isinstance(exc, SettingsError):  # a MODELDEPOT_* value that should be JSON and is not
        found = re.search(r'field "([^"]+)"', str(exc))
        field = found.group(1) if found else "?"
        why = "not valid JSON" if isinstance(exc.__cause__, json.JSONDecodeError) else "cannot be parsed"
        hint = _JSON_HINTS.get(field)
        return ConfigurationError(f"invalid setting {field}{_where(field, values)}: {why}{'; ' + hint if hint else ''}")
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = err["loc"]
        field = str(loc[0]) if loc else "?"
        name = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
        msg = "unknown setting" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"invalid setting {name}{_where(field, values)}: {msg}")
    return ConfigurationError("; ".join(dict.fromkeys(parts)))


class DepotConfig(BaseSettings):
    """Every setting of modeldepot. Each field can also be set as ``MODELDEPOT_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    home: Path = Field(default_factory=default_home, description="Root of all modeldepot data")
    models_dir: Path | None = Field(default=None, description="Materialised models (default home/models)")
    db: str | None = Field(
        default=None,
        description="SQLite path, postgresql:// URL or .yaml path (default home/databases/modeldepot.db)",
    )
    link_modes: Annotated[list[LinkMode], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_LINK_MODES),
        description="Ways to materialise a model from blobs, tried in order",
    )
    hashing_algorithm: str = Field(default="blake3", description="blake3, blake3_single, sha256 or any hashlib name")
    ram_cache_gb: float | None = Field(default=None, ge=0, description="RAM cache budget (default: derived)")
    vram_cache_gb: float | None = Field(default=None, ge=0, description="VRAM cache budget (default: derived)")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    max_parallel_downloads: int = Field(default=5, ge=1, le=64)
    hf_endpoint: str = "https://huggingface.co"
    civitai_endpoint: str = "https://civitai.com"
    remote_api_tokens: list[RemoteToken] = Field(default_factory=list, description="Never persisted")
    allow_private_urls: bool = Field(
        default=False, description="Allow downloads from any private/loopback address (tests, demos, LAN-only use)"
    )
    trusted_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts (any port) or host:port entries downloads may reach even on a private address",
    )
    api_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body the API accepts (413 beyond)"
    )
    api_key: SecretStr | None = Field(default=None, description="Required when serving on a non-loopback address")
    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=0, le=65535)
    download_cache_gb: float = Field(default=10.0, ge=0, description="Cap of download_and_cache's folder")
    preserve_partial_downloads: bool = False
    install_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long an install job stays its process's without a heartbeat; then another may take it over",
    )
    split_single_files: bool = Field(
        default=False,
        description=(
            "Store single-file SD checkpoints as their parts (unet, vae, text encoders), so parts shared"
            " between checkpoints are stored once; A1111/ComfyUI then need `modeldepot export` (see `du`)"
        ),
    )
    on_duplicate: Literal["return", "error"] = Field(
        default="return", description="Installing content already present returns the record, or raises"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    blob_remote: str | None = Field(
        default=None,
        description=(
            "Fleet mode: an s3://bucket/prefix the workers share (with db a postgresql:// URL); credentials"
            " come from the AWS environment or profile, never from here"
        ),
    )
    blob_remote_endpoint: str | None = Field(
        default=None, description="S3-compatible endpoint URL (MinIO, R2, Ceph); default AWS_ENDPOINT_URL or AWS"
    )
    local_cache_gb: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Fleet mode: local blob budget; the least recently used models beyond it are evicted (kept in the bucket)"
        ),
    )

    def __init__(self, **values: Any) -> None:
        """Build the settings; any bad value, variable or settings file is one ``ConfigurationError``."""
        try:
            super().__init__(**values)
        except (ValidationError, SettingsError) as exc:
            # from None: pydantic's own text quotes the input, which may hold a token.
            raise settings_error(exc, values) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs: dict[str, Any] = dict(getattr(init_settings, "init_kwargs", {}))
        if "home" not in init_kwargs:
            env_home = env_settings().get("home")
            if env_home:
                init_kwargs["home"] = env_home
        return (init_settings, env_settings, _YamlSource(settings_cls, init_kwargs))

    @field_validator("link_modes", mode="before")
    @classmethod
    def _split_modes(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [m.strip() for m in v.split(",") if m.strip()]
        return v

    @field_validator("trusted_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            v = [h.strip() for h in text.split(",") if h.strip()]
        return v

    @field_validator("trusted_hosts")
    @classmethod
    def _hosts_parse(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                parse_host(entry)
            except ValueError as exc:
                raise ValueError(f"trusted_hosts entry: {exc}") from None
        return v

    @field_validator("blob_remote")
    @classmethod
    def _bucket_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        bucket, prefix = parse_bucket_url(v)
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"

    @field_validator("blob_remote_endpoint")
    @classmethod
    def _endpoint_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise ValueError("blob_remote_endpoint must be an http(s)://host[:port] URL without credentials")
        return v.strip().rstrip("/")

    @field_validator("link_modes")
    @classmethod
    def _modes_nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("link_modes needs at least one mode")
        if len(set(v)) != len(v):
            raise ValueError("link_modes lists a mode twice")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE_RE.match(v):
            raise ValueError(f"device {v!r} must be auto, cpu, cuda, cuda:N or mps")
        return v

    @field_validator("hashing_algorithm")
    @classmethod
    def _algorithm(cls, v: str) -> str:
        import hashlib

        if v not in ("blake3", "blake3_single", "blake3_multi") and v not in hashlib.algorithms_available:
            raise ValueError(f"hashing_algorithm {v!r} is not blake3, blake3_single or a hashlib algorithm")
        return v

    @model_validator(mode="after")
    def _fill_paths(self) -> DepotConfig:
        self.home = self.home.expanduser().resolve()
        if self.models_dir is None:
            self.models_dir = self.home / "models"
        else:
            self.models_dir = self.models_dir.expanduser()
            if not self.models_dir.is_absolute():
                self.models_dir = self.home / self.models_dir
        if self.db is None:
            self.db = str(self.home / "databases" / "modeldepot.db")
        elif "://" not in self.db:
            p = Path(self.db).expanduser()
            self.db = str(p if p.is_absolute() else self.home / p)
        return self

    @classmethod
    def load(cls, **kwargs: Any) -> DepotConfig:
        """Build settings (like the constructor): a bad setting raises one ``ConfigurationError``
        naming it, where it came from and what is wrong."""
        return cls(**kwargs)

    # Paths derived from home (DESIGN.md §3).
    @property
    def models_path(self) -> Path:
        assert self.models_dir is not None
        return self.models_dir

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def databases_dir(self) -> Path:
        return self.home / "databases"

    @property
    def db_url(self) -> str:
        assert self.db is not None
        return self.db

    @property
    def db_path(self) -> Path:
        """The SQLite (or YAML) file of the records, as document 002's ``config.db_path``.

        Raises:
            ConfigurationError: the records live in PostgreSQL, not in a file.
        """
        if "://" in self.db_url:
            raise ConfigurationError("the records database is a server (db is a URL), not a file")
        return Path(self.db_url)

    def token_for(self, url: str) -> str | None:
        """The first configured token that belongs to ``url``'s host (see ``RemoteToken``)."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return None
        if not host:
            return None
        port = port or default_port(parts.scheme)
        for entry in self.remote_api_tokens:
            if entry.matches(host, port):
                return entry.token.get_secret_value()
        return None

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to show or save: secrets removed."""
        data = self.model_dump(mode="json", exclude=set(SECRET_FIELDS))
        return data

    def save(self) -> Path:
        """Write non-secret settings to ``home/modeldepot.yaml`` atomically."""
        from modeldepot._fs import atomic_write_text

        path = self.home / SETTINGS_FILE
        data = self.public_dict()
        data.pop("home", None)
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=True))
        return path


__all__ = ["DepotConfig", "LinkMode", "RemoteToken", "default_home", "settings_error"]
