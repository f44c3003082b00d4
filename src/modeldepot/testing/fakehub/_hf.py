"""The Hugging Face Hub part: repo info, tree listing, resolve (with the LFS redirect to a CDN URL).

Faithfulness notes (checked against huggingface_hub's client):
- ``HEAD /resolve`` of an LFS file answers 302 with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``;
  the client follows same-origin redirects, so the CDN answer also carries ``X-Repo-Commit`` and a
  sha256 ``ETag`` (which huggingface_hub then uses as the blob name, as with the real hub).
- small files are answered directly with the git blob sha1 as ``ETag``.
- errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), which is
  what ``hf_raise_for_status`` maps to its exception classes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import mimetypes
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from modeldepot.errors import ConfigurationError
from modeldepot.taxonomy import ANY_WEIGHT_SUFFIXES, has_suffix

from ._blobs import Spool, git_blob_sha1, git_blob_sha1_bytes, lfs_pointer, materialise, sha256_file
from ._http import Entity, Reply, Request, error_reply, json_reply

LFS_THRESHOLD = 10 * 1024


@dataclass(frozen=True)
class HFFile:
    path: str
    source: Path
    size: int
    blob_id: str
    """Git object id: of the content for small files, of the LFS pointer for LFS files."""
    sha256: str | None = None
    """Set for LFS files only."""
    pointer_size: int | None = None

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None

    @property
    def etag(self) -> str:
        return f'"{self.sha256 or self.blob_id}"'


@dataclass(frozen=True)
class HFCommit:
    sha: str
    files: Mapping[str, HFFile]
    date: datetime


@dataclass
class HFRepo:
    repo_id: str
    author: str
    tags: list[str] = field(default_factory=list)
    card_data: dict[str, object] | None = None
    gated_token: str | None = None
    private: bool = False
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, HFCommit] = field(default_factory=dict)

    def resolve(self, revision: str) -> HFCommit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


def _iso(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _is_lfs(path: str, size: int) -> bool:
    return size > LFS_THRESHOLD or has_suffix(path, ANY_WEIGHT_SUFFIXES)


class HFService:
    """Repos and their routes; ``handle`` returns None for paths that are not Hugging Face routes."""

    def __init__(self, spool: Spool, secret: bytes, cdn_base: Callable[[Request], str]) -> None:
        self._spool = spool
        self._secret = secret
        self._cdn_base = cdn_base
        self._lock = threading.Lock()
        self.repos: dict[str, HFRepo] = {}
        self._cdn: dict[str, Path] = {}  # sha256 -> file, shared by every repo (like the LFS store)
        self.tree_page_size = 50
        self.redirect_lfs = True
        self.cdn_url_ttl = 3600.0

    # -- building -------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        revision: str = "main",
        gated_token: str | None = None,
        tags: list[str] | None = None,
        card_data: dict[str, object] | None = None,
        author: str | None = None,
        private: bool = False,
    ) -> str:
        parts = repo_id.split("/")
        if not 1 <= len(parts) <= 2 or not all(parts) or any(p in (".", "..") for p in parts):
            raise ConfigurationError(f"fakehub: invalid Hugging Face repo id {repo_id!r} (expected 'org/name')")
        if not revision or "\0" in revision:
            raise ConfigurationError(f"fakehub: invalid revision {revision!r}")
        built: dict[str, HFFile] = {}
        for name, data in files.items():
            rel = name.replace("\\", "/").strip("/")
            if not rel or any(p in ("", ".", "..") for p in rel.split("/")):
                raise ConfigurationError(f"fakehub: invalid file path {name!r} in repo {repo_id}")
            built[rel] = self._make_file(rel, materialise(self._spool, data))
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"{repo_id}\0{revision}\0".encode())
        for rel in sorted(built):
            digest.update(f"{rel}\0{built[rel].blob_id}\0".encode())
        sha = digest.hexdigest()
        with self._lock:
            repo = self.repos.get(repo_id)
            if repo is None:
                repo = HFRepo(repo_id=repo_id, author=author or (parts[0] if len(parts) == 2 else ""))
                self.repos[repo_id] = repo
            if author is not None:
                repo.author = author
            if tags is not None:
                repo.tags = list(tags)
            if card_data is not None:
                repo.card_data = dict(card_data)
            if gated_token is not None:
                repo.gated_token = gated_token
            repo.private = repo.private or private
            repo.commits[sha] = HFCommit(sha=sha, files=built, date=datetime.now(UTC))
            repo.branches[revision] = sha
            for f in built.values():
                if f.sha256 is not None:
                    self._cdn[f.sha256] = f.source
        return sha

    def _make_file(self, rel: str, source: Path) -> HFFile:
        size = source.stat().st_size
        if _is_lfs(rel, size):
            sha = sha256_file(source)
            pointer = lfs_pointer(sha, size)
            return HFFile(rel, source, size, git_blob_sha1_bytes(pointer), sha, len(pointer))
        return HFFile(rel, source, size, git_blob_sha1(source))

    # -- routing --------------------------------------------------------------------------------

    def handle(self, req: Request) -> Reply | None:
        seg = req.segments
        if len(seg) >= 3 and seg[0] == "api" and seg[1] == "models":
            return self._api(req, seg[2:])
        if seg and seg[0] == "cdn":
            return self._cdn_get(req, seg[1:])
        for n in (2, 1):
            if len(seg) > n + 2 and seg[n] == "resolve" and "/".join(seg[:n]) in self.repos:
                return self._resolve(req, self.repos["/".join(seg[:n])], seg[n + 1], "/".join(seg[n + 2 :]))
        if len(seg) > 4 and seg[2] == "resolve":  # looks like a resolve URL for a repo we do not have
            return _repo_not_found(req, "/".join(seg[:2]))
        return None

    def _split_repo(self, seg: list[str]) -> tuple[HFRepo | None, str, list[str]]:
        if len(seg) >= 2 and "/".join(seg[:2]) in self.repos:
            return self.repos["/".join(seg[:2])], "/".join(seg[:2]), seg[2:]
        if seg[0] in self.repos:
            return self.repos[seg[0]], seg[0], seg[1:]
        return None, "/".join(seg[:2]), seg[2:]

    def _access_error(self, req: Request, repo: HFRepo, *, for_files: bool) -> Reply | None:
        """Private repos hide everything; gated repos hide file contents (their metadata is public)."""
        token = req.bearer()
        if repo.private and (token is None or (repo.gated_token is not None and token != repo.gated_token)):
            return _repo_not_found(req, repo.repo_id)
        if for_files and repo.gated_token is not None and token != repo.gated_token:
            if token is None:
                msg = f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated."
                return error_reply(401, msg, [("X-Error-Code", "GatedRepo"), ("X-Error-Message", msg)])
            msg = f"Access to model {repo.repo_id} is restricted and you are not in the authorized list."
            return error_reply(403, msg, [("X-Error-Code", "GatedRepo"), ("X-Error-Message", msg)])
        return None

    def _api(self, req: Request, seg: list[str]) -> Reply:
        repo, repo_id, rest = self._split_repo(seg)
        if repo is None:
            return _repo_not_found(req, repo_id)
        denied = self._access_error(req, repo, for_files=False)
        if denied is not None:
            return denied
        if not rest or (len(rest) == 2 and rest[0] == "revision"):
            revision = rest[1] if rest else "main"
            commit = repo.resolve(revision)
            if commit is None:
                return _revision_not_found(repo_id, revision)
            return json_reply(200, self._info(repo, commit, req.query.get("blobs", "").lower() == "true"))
        if rest == ["refs"]:
            return json_reply(200, self._refs(repo))
        if len(rest) >= 2 and rest[0] == "tree":
            commit = repo.resolve(rest[1])
            if commit is None:
                return _revision_not_found(repo_id, rest[1])
            return self._tree(req, repo, rest[1], commit, "/".join(rest[2:]))
        return error_reply(404, "Sorry, we can't find the page you are looking for.")

    def _info(self, repo: HFRepo, commit: HFCommit, blobs: bool) -> dict[str, object]:
        siblings: list[dict[str, object]] = []
        for f in sorted(commit.files.values(), key=lambda f: f.path):
            entry: dict[str, object] = {"rfilename": f.path}
            if blobs:
                entry["size"] = f.size
                entry["blobId"] = f.blob_id
                if f.is_lfs:
                    entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(entry)
        card = repo.card_data or {}
        library = card.get("library_name")
        if library is None and "model_index.json" in commit.files:
            library = "diffusers"
        return {
            "_id": hashlib.md5(repo.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.author,
            "sha": commit.sha,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created),
            "private": repo.private,
            "gated": "manual" if repo.gated_token is not None else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": library,
            "pipeline_tag": card.get("pipeline_tag"),
            "tags": list(repo.tags),
            "cardData": card,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(f.size for f in commit.files.values()),
        }

    def _refs(self, repo: HFRepo) -> dict[str, object]:
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
            for name, sha in sorted(repo.branches.items())
        ]
        return {"branches": branches, "converts": [], "tags": []}

    def _tree(self, req: Request, repo: HFRepo, revision: str, commit: HFCommit, under: str) -> Reply:
        under = under.strip("/")
        recursive = req.query.get("recursive", "").lower() == "true"
        prefix = under + "/" if under else ""
        entries: dict[str, dict[str, object]] = {}
        for f in commit.files.values():
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix) :].split("/")
            # every folder between ``under`` and the file is an entry of its own (as on the hub)
            depth = len(rest) if recursive else 1
            for i in range(1, min(depth, len(rest) - 1) + 1):
                d = prefix + "/".join(rest[:i])
                entries.setdefault(d, {"type": "directory", "oid": _tree_oid(commit.sha, d), "size": 0, "path": d})
            if recursive or len(rest) == 1:
                entry: dict[str, object] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
                if f.is_lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
                entries[f.path] = entry
        if under and not entries:
            return _entry_not_found(commit.sha, f"{repo.repo_id}/tree/{revision}/{under}")
        listing = [entries[k] for k in sorted(entries)]
        page_size = max(1, self.tree_page_size)
        start = _decode_cursor(req.query.get("cursor"))
        page = listing[start : start + page_size]
        headers: list[tuple[str, str]] = []
        if start + page_size < len(listing):
            params = {k: v for k, v in req.query.items() if k != "cursor"}
            params["cursor"] = _encode_cursor(start + page_size)
            headers.append(("Link", f'<{req.base_url}{req.path}?{urlencode(params)}>; rel="next"'))
        return json_reply(200, page, headers)

    def _resolve(self, req: Request, repo: HFRepo, revision: str, path: str) -> Reply:
        denied = self._access_error(req, repo, for_files=True)
        if denied is not None:
            return denied
        commit = repo.resolve(revision)
        if commit is None:
            return _revision_not_found(repo.repo_id, revision)
        f = commit.files.get(path)
        if f is None:
            return _entry_not_found(commit.sha, f"{repo.repo_id}/resolve/{revision}/{path}")
        headers = [("X-Repo-Commit", commit.sha), ("Vary", "Origin, Accept")]
        name = path.rsplit("/", 1)[-1]
        if f.is_lfs:
            headers += [("X-Linked-Etag", f.etag), ("X-Linked-Size", str(f.size))]
            if self.redirect_lfs:
                location = self.cdn_url(req, f, commit.sha)
                body = f"Found. Redirecting to {location}".encode()
                headers += [("ETag", f.etag), ("Location", location), ("Content-Type", "text/plain; charset=utf-8")]
                headers.append(("Accept-Ranges", "bytes"))
                return Reply(status=302, headers=headers, body=body)
        headers += [("Content-Type", _content_type(name)), ("Content-Disposition", _disposition(name, "inline"))]
        return Reply(headers=headers, entity=Entity(f.source, f.size, f.etag))

    # -- the CDN --------------------------------------------------------------------------------

    def _sign(self, sha256: str, expires: int) -> str:
        return hmac.new(self._secret, f"cdn:{sha256}:{expires}".encode(), hashlib.sha256).hexdigest()

    def cdn_url(self, req: Request, f: HFFile, commit_sha: str) -> str:
        assert f.sha256 is not None
        expires = int(time.time() + self.cdn_url_ttl)
        name = f.path.rsplit("/", 1)[-1]
        params = {
            "response-content-disposition": _disposition(name, "inline"),
            "x-repo-commit": commit_sha,
            "Expires": str(expires),
            "Signature": self._sign(f.sha256, expires),
            "Key-Pair-Id": "FAKEHUBKEYPAIR",
        }
        return f"{self._cdn_base(req)}/cdn/{f.sha256}?{urlencode(params)}"

    def _cdn_get(self, req: Request, seg: list[str]) -> Reply:
        if len(seg) != 1 or seg[0] not in self._cdn:
            return Reply(
                status=404, body=b"<Error><Code>NoSuchKey</Code></Error>", headers=[("Content-Type", "text/xml")]
            )
        sha = seg[0]
        try:
            expires = int(req.query.get("Expires", ""))
        except ValueError:
            expires = -1
        if not hmac.compare_digest(req.query.get("Signature", ""), self._sign(sha, expires)):
            return Reply(
                status=403, body=b"<Error><Code>AccessDenied</Code></Error>", headers=[("Content-Type", "text/xml")]
            )
        if expires < time.time():
            body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            return Reply(status=403, body=body, headers=[("Content-Type", "text/xml")])
        source = self._cdn[sha]
        headers = [("Content-Type", "application/octet-stream")]
        disposition = req.query.get("response-content-disposition")
        if disposition:
            headers.append(("Content-Disposition", disposition))
        commit = req.query.get("x-repo-commit")
        if commit:
            # Only needed because huggingface_hub follows same-origin redirects and reads metadata here.
            headers.append(("X-Repo-Commit", commit))
        return Reply(headers=headers, entity=Entity(source, source.stat().st_size, f'"{sha}"'))


def _content_type(name: str) -> str:
    guessed = mimetypes.guess_type(name)[0]
    return guessed or "application/octet-stream"


def _disposition(name: str, kind: str) -> str:
    # The trailing ';' matters: huggingface_hub's filename regex expects it (as the real hub sends it).
    return f"{kind}; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"


def _tree_oid(commit: str, path: str) -> str:
    return hashlib.sha1(f"tree\0{commit}\0{path}".encode(), usedforsecurity=False).hexdigest()


def _encode_cursor(n: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{n}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return max(0, int(raw.removeprefix("offset:")))
    except ValueError:
        return 0


def _repo_not_found(req: Request, repo_id: str) -> Reply:
    # Like the real hub: 401 when no token was sent (missing, private and gated look alike), else 404.
    msg = "Repository not found"
    status = 401 if req.bearer() is None else 404
    return error_reply(status, msg, [("X-Error-Code", "RepoNotFound"), ("X-Error-Message", msg)])


def _revision_not_found(repo_id: str, revision: str) -> Reply:
    msg = f"Invalid rev id: {revision}"
    return error_reply(404, msg, [("X-Error-Code", "RevisionNotFound"), ("X-Error-Message", msg)])


def _entry_not_found(commit: str, what: str) -> Reply:
    msg = "Entry not found"
    headers = [("X-Error-Code", "EntryNotFound"), ("X-Error-Message", msg), ("X-Repo-Commit", commit)]
    return error_reply(404, msg, headers)
