"""The Civitai part: model and version metadata, lookup by hash, and the download redirect.

Shapes follow developer.civitai.com (models, model-versions, by-hash) and the download route: it
answers 307 to a pre-signed, S3-looking URL whose answer carries ``Content-Disposition``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from modeldepot.errors import ConfigurationError

from ._blobs import Spool, civitai_hashes, materialise
from ._http import Entity, Reply, Request, error_reply, json_reply

_SELECTORS = (("type", "type"), ("format", "format"), ("size", "size"), ("fp", "fp"))


@dataclass(frozen=True)
class _StoredFile:
    key: str
    name: str
    source: Path
    sha256: str
    meta: dict[str, Any]
    """The public file dict (without the download URL, which depends on the request host)."""


@dataclass
class _Version:
    model_id: int
    data: dict[str, Any]
    files: list[_StoredFile]
    gated_token: str | None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class CivitaiService:
    def __init__(self, spool: Spool, secret: bytes, cdn_base: Callable[[Request], str]) -> None:
        self._spool = spool
        self._secret = secret
        self._cdn_base = cdn_base
        self._lock = threading.Lock()
        self._models: dict[int, dict[str, Any]] = {}
        self._versions: dict[int, _Version] = {}
        self._by_hash: dict[str, int] = {}
        self._cdn: dict[str, _StoredFile] = {}
        self._next_file_id = 1
        self.cdn_url_ttl = 3600.0

    # -- building -------------------------------------------------------------------------------

    def add_model(self, model: dict[str, Any]) -> None:
        try:
            model_id = int(model["id"])
            versions_in = list(model.get("modelVersions") or [])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"fakehub: a Civitai model needs an integer 'id' ({exc})") from exc
        public = {k: copy.deepcopy(v) for k, v in model.items() if k != "modelVersions"}
        public.setdefault("name", f"model {model_id}")
        public.setdefault("description", "")
        public.setdefault("type", "Checkpoint")
        public.setdefault("nsfw", False)
        public.setdefault("poi", False)
        public.setdefault("tags", [])
        public.setdefault("creator", {"username": "fakehub", "image": None})
        public.setdefault("stats", {"downloadCount": 0, "favoriteCount": 0, "rating": 0, "ratingCount": 0})
        for flag, default in (
            ("allowNoCredit", True),
            ("allowCommercialUse", ["Sell"]),
            ("allowDerivatives", True),
            ("allowDifferentLicense", True),
        ):
            public.setdefault(flag, default)
        versions: list[_Version] = []
        for v in versions_in:
            versions.append(self._build_version(model_id, public, v))
        with self._lock:
            self._models[model_id] = public
            for version in versions:
                self._versions[int(version.data["id"])] = version
                for f in version.files:
                    self._cdn[f.key] = f
                    for value in f.meta["hashes"].values():
                        self._by_hash.setdefault(value.upper(), int(version.data["id"]))
            public["_version_ids"] = [int(v.data["id"]) for v in versions]

    def _build_version(self, model_id: int, model: dict[str, Any], v: dict[str, Any]) -> _Version:
        try:
            version_id = int(v["id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"fakehub: every Civitai model version needs an integer 'id' ({exc})") from exc
        data = {k: copy.deepcopy(val) for k, val in v.items() if k not in ("files", "gated_token", "images")}
        data.setdefault("name", f"v{version_id}")
        data.setdefault("baseModel", "SD 1.5")
        data.setdefault("baseModelType", "Standard")
        data.setdefault("trainedWords", [])
        data.setdefault("description", None)
        data.setdefault("status", "Published")
        data.setdefault("availability", "Public")
        data.setdefault("nsfwLevel", 1)
        data.setdefault("createdAt", _now())
        data.setdefault("updatedAt", data["createdAt"])
        data.setdefault("publishedAt", data["createdAt"])
        data.setdefault("stats", {"downloadCount": 0, "ratingCount": 0, "rating": 0, "thumbsUpCount": 0})
        data["air"] = f"urn:air:sd1:{str(model['type']).lower()}:civitai:{model_id}@{version_id}"
        images = []
        for i, img in enumerate(v.get("images") or []):
            image = dict(img)
            for key, default in (("id", version_id * 100 + i), ("nsfwLevel", 1), ("width", 512), ("height", 512)):
                image.setdefault(key, default)
            image.setdefault("hash", "U00000fQfQfQfQfQfQfQfQfQfQfQ")
            image.setdefault("type", "image")
            image.setdefault("meta", None)
            images.append(image)
        data["images"] = images
        files: list[_StoredFile] = []
        raw_files = list(v.get("files") or [])
        has_primary = any(f.get("primary") for f in raw_files)
        for i, f in enumerate(raw_files):
            if "name" not in f or "data" not in f:
                raise ConfigurationError(f"fakehub: Civitai version {version_id} has a file without 'name' or 'data'")
            source = materialise(self._spool, f["data"])
            hashes = civitai_hashes(source, str(f["name"]))
            with self._lock:
                file_id = int(f.get("id") or self._next_file_id)
                self._next_file_id = max(self._next_file_id, file_id) + 1
            metadata = dict(f.get("metadata") or {})
            if str(f["name"]).lower().endswith(".safetensors"):
                metadata.setdefault("format", "SafeTensor")
            meta = {
                "id": file_id,
                "name": str(f["name"]),
                "type": f.get("type", "Model"),
                "sizeKB": source.stat().st_size / 1024,
                "primary": bool(f.get("primary")) or (not has_primary and i == 0),
                "metadata": metadata,
                "pickleScanResult": "Success",
                "pickleScanMessage": "No Pickle imports",
                "virusScanResult": "Success",
                "scannedAt": data["createdAt"],
                "hashes": hashes,
            }
            key = hashlib.sha256(f"{version_id}:{file_id}:{hashes['SHA256']}".encode()).hexdigest()[:32]
            files.append(_StoredFile(key, str(f["name"]), source, hashes["SHA256"].lower(), meta))
        return _Version(model_id, data, files, v.get("gated_token"))

    # -- rendering ------------------------------------------------------------------------------

    def _download_url(self, base: str, version_id: int, f: _StoredFile | None = None) -> str:
        url = f"{base}/api/download/models/{version_id}"
        if f is None:
            return url
        params = {"type": f.meta["type"]}
        for key in ("format", "size", "fp"):
            if key in f.meta["metadata"]:
                params[key] = f.meta["metadata"][key]
        return f"{url}?{urlencode(params)}"

    def _version_json(self, base: str, version: _Version, *, with_model: bool) -> dict[str, Any]:
        vid = int(version.data["id"])
        out = dict(version.data)
        out["modelId"] = version.model_id
        if with_model:
            model = self._models[version.model_id]
            out["model"] = {k: model.get(k) for k in ("name", "type", "nsfw", "poi")}
        out["files"] = [{**f.meta, "downloadUrl": self._download_url(base, vid, f)} for f in version.files]
        out["downloadUrl"] = self._download_url(base, vid)
        return out

    def _model_json(self, base: str, model_id: int) -> dict[str, Any]:
        model = self._models[model_id]
        out = {k: v for k, v in model.items() if not k.startswith("_")}
        out["modelVersions"] = [
            self._version_json(base, self._versions[vid], with_model=False) for vid in model["_version_ids"]
        ]
        return out

    # -- routing --------------------------------------------------------------------------------

    def handle(self, req: Request) -> Reply | None:
        seg = req.segments
        base = req.base_url
        if seg[:2] == ["api", "v1"] and len(seg) >= 3:
            return self._api(req, seg[2:], base)
        if seg[:3] == ["api", "download", "models"] and len(seg) == 4:
            return self._download(req, seg[3])
        if seg and seg[0] == "civitai-cdn":
            return self._cdn_get(req, seg[1:])
        return None

    def _api(self, req: Request, seg: list[str], base: str) -> Reply:
        if seg[0] == "models" and len(seg) == 2:
            mid = _int(seg[1])
            if mid is None or mid not in self._models:
                return error_reply(404, f"No model with id {seg[1]}")
            return json_reply(200, self._model_json(base, mid))
        if seg[0] == "models" and len(seg) == 1:
            ids = [i for i in (_int(x) for x in req.query.get("ids", "").split(",")) if i in self._models]
            if not req.query.get("ids"):
                ids = sorted(self._models)
            items = [self._model_json(base, i) for i in ids]
            return json_reply(200, {"items": items, "metadata": {"totalItems": len(items)}})
        if seg[0] == "model-versions" and len(seg) == 3 and seg[1] == "by-hash":
            vid = self._by_hash.get(seg[2].upper())
            if vid is None:
                return error_reply(404, "Model not found")
            return json_reply(200, self._version_json(base, self._versions[vid], with_model=True))
        if seg[0] == "model-versions" and len(seg) == 2:
            vid = _int(seg[1])
            if vid is None or vid not in self._versions:
                return error_reply(404, f"No model version with id {seg[1]}")
            return json_reply(200, self._version_json(base, self._versions[vid], with_model=True))
        return error_reply(404, "Not Found")

    def _download(self, req: Request, raw_id: str) -> Reply:
        vid = _int(raw_id)
        version = self._versions.get(vid) if vid is not None else None
        if version is None:
            return error_reply(404, "Model not found")
        if version.gated_token is not None:
            token = req.bearer() or req.query.get("token")
            if token != version.gated_token:
                message = (
                    "The creator of this asset requires you to be logged in to download it"
                    if token is None
                    else "Invalid API token"
                )
                return json_reply(401, {"error": "Unauthorized", "message": message})
        chosen = self._choose_file(version, req.query)
        if chosen is None:
            return error_reply(404, "No file matches the requested type/format")
        expires = int(time.time() + self.cdn_url_ttl)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        params = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": "FAKEHUB/auto/s3/aws4_request",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(int(self.cdn_url_ttl)),
            "X-Amz-SignedHeaders": "host",
            "x-id": "GetObject",
            "Expires": str(expires),
            "X-Amz-Signature": self._sign(chosen.key, expires),
        }
        location = f"{self._cdn_base(req)}/civitai-cdn/{chosen.key}/{quote(chosen.name)}?{urlencode(params)}"
        return Reply(status=307, headers=[("Location", location), ("Content-Type", "text/plain")], body=b"")

    @staticmethod
    def _choose_file(version: _Version, query: dict[str, str]) -> _StoredFile | None:
        wanted = {k: query[q] for q, k in _SELECTORS if query.get(q)}
        if not wanted:
            primary = [f for f in version.files if f.meta["primary"]] or version.files
            return primary[0] if primary else None
        for f in version.files:
            have = {"type": f.meta["type"], **{k: f.meta["metadata"].get(k) for k in ("format", "size", "fp")}}
            if all(str(have.get(k, "")).lower() == str(v).lower() for k, v in wanted.items()):
                return f
        return None

    def _sign(self, key: str, expires: int) -> str:
        return hmac.new(self._secret, f"civitai:{key}:{expires}".encode(), hashlib.sha256).hexdigest()

    def _cdn_get(self, req: Request, seg: list[str]) -> Reply:
        f = self._cdn.get(seg[0]) if len(seg) == 2 else None
        if f is None:
            return Reply(
                status=404, body=b"<Error><Code>NoSuchKey</Code></Error>", headers=[("Content-Type", "text/xml")]
            )
        expires = _int(req.query.get("Expires", "")) or -1
        if not hmac.compare_digest(req.query.get("X-Amz-Signature", ""), self._sign(f.key, expires)):
            body = b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
            return Reply(status=403, body=body, headers=[("Content-Type", "text/xml")])
        if expires < time.time():
            body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            return Reply(status=403, body=body, headers=[("Content-Type", "text/xml")])
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Disposition", f'attachment; filename="{f.name}"'),
        ]
        return Reply(headers=headers, entity=Entity(f.source, f.source.stat().st_size, f'"{f.sha256[:32]}"'))


def _int(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None
