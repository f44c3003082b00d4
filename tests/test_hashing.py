"""Tests for modeldepot.hashing and the hash cache (expected values are computed independently here)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import threading
import time
import types
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3 as blake3_mod
import pytest

from modeldepot import hashing
from modeldepot._db import Database
from modeldepot.errors import ConfigurationError, HashingError
from modeldepot.hashing import (
    CivitaiHashes,
    HashCache,
    HashingPathNotFoundError,
    HashingPermissionError,
    ModelHash,
    StreamingHasher,
    autov1,
    autov2,
    autov3,
    civitai_hashes,
)

HOUR_NS = 3600 * 10**9


def b3(data: bytes) -> str:
    return blake3_mod.blake3(data).hexdigest()


def write(path: Path, data: bytes, *, age_ns: int = HOUR_NS) -> Path:
    """Write ``data`` and date the file in the past, so the hash cache does not treat it as racy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time_ns() - age_ns
    os.utime(path, ns=(t, t))
    return path


def pseudo_random(n: int, seed: int = 0) -> bytes:
    # Deterministic, non-repeating at the 4 MiB buffer scale, and fast: blake3's XOF.
    return blake3_mod.blake3(seed.to_bytes(8, "little")).digest(length=n)


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file ModelHash actually reads lands in this list."""
    calls: list[Path] = []
    real = hashing._file_hex

    def counting(path: Path, algorithm: str) -> str:
        calls.append(Path(path))
        return real(path, algorithm)

    monkeypatch.setattr(hashing, "_file_hex", counting)
    return calls


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database.open(tmp_path / "db" / "modeldepot.db")
    else:
        database = Database.open(request.getfixturevalue("pg_url"))
    yield database
    database.close()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "db" / "modeldepot.db")
    yield database
    database.close()


# --- single files ---------------------------------------------------------------------------------


def test_known_vectors_literal(tmp_path: Path) -> None:
    abc = write(tmp_path / "abc.bin", b"abc")
    empty = write(tmp_path / "empty.bin", b"")
    # Published test vectors (FIPS 180-2 and the BLAKE3 reference).
    assert ModelHash("sha256").hash(abc) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert ModelHash("blake3").hash(empty) == "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert (
        ModelHash("blake3_single")
        .hash(empty)
        .endswith("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
    )


@pytest.mark.parametrize(
    ("algorithm", "prefix", "expected"),
    [
        ("blake3", "blake3", b3),
        ("blake3_multi", "blake3", b3),
        ("blake3_single", "blake3", b3),
        ("sha256", "sha256", lambda d: hashlib.sha256(d).hexdigest()),
        ("SHA256", "sha256", lambda d: hashlib.sha256(d).hexdigest()),
        ("md5", "md5", lambda d: hashlib.md5(d).hexdigest()),
        ("sha3_256", "sha3_256", lambda d: hashlib.sha3_256(d).hexdigest()),
        ("blake2b", "blake2b", lambda d: hashlib.blake2b(d).hexdigest()),
        ("shake_256", "shake_256", lambda d: hashlib.shake_256(d).hexdigest(64)),
    ],
)
def test_file_digest_matches_reference(
    tmp_path: Path, algorithm: str, prefix: str, expected: Callable[[bytes], str]
) -> None:
    # 9 MiB + 5 bytes: several 4 MiB buffers and a ragged tail; large enough for blake3's threads.
    data = pseudo_random(9 * 2**20 + 5)
    path = write(tmp_path / "model.safetensors", data)
    assert ModelHash(algorithm).hash(path) == f"{prefix}:{expected(data)}"
    assert ModelHash(algorithm).hash(str(path)) == f"{prefix}:{expected(data)}"


def test_blake3_and_blake3_single_agree(tmp_path: Path) -> None:
    path = write(tmp_path / "m.bin", pseudo_random(5 * 2**20 + 123, seed=3))
    assert (
        ModelHash("blake3").hash(path) == ModelHash("blake3_single").hash(path) == ModelHash("blake3_multi").hash(path)
    )
    folder = tmp_path
    assert ModelHash("blake3").hash(folder) == ModelHash("blake3_single").hash(folder)


def test_unknown_algorithm_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'sha257'"):
        ModelHash("sha257")
    with pytest.raises(ConfigurationError):
        StreamingHasher("nope")


def test_symlinked_file_hashes_its_target(tmp_path: Path) -> None:
    target = write(tmp_path / "real.safetensors", b"weights")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    assert ModelHash().hash(link) == f"blake3:{b3(b'weights')}"


# --- folders --------------------------------------------------------------------------------------


def folder_expected(files: dict[str, bytes], per_file: Callable[[bytes], str] = b3) -> str:
    """The documented rule, written out independently of the implementation."""
    composite = blake3_mod.blake3()
    for rel in sorted(files, key=lambda r: r.encode()):
        composite.update(rel.encode() + b"\0" + per_file(files[rel]).encode() + b"\0")
    return composite.hexdigest()


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        write(root / rel, data)
    return root


WEIGHTS = {
    "unet/diffusion_pytorch_model.safetensors": b"unet-weights",
    "vae/diffusion_pytorch_model.safetensors": b"vae-weights",
    "text_encoder/model.bin": b"te-weights",
    "z.ckpt": b"ckpt",
    "a.gguf": b"gguf",
    "b.PTH": b"upper-case suffix",
}
EXTRAS = {
    "model_index.json": b"{}",
    "unet/config.json": b'{"a": 1}',
    "tokenizer/vocab.txt": b"hello",
    "README.md": b"# readme",
    ".cache/huggingface/x.safetensors": b"hidden",
    "._shadow.safetensors": b"appledouble",
}


def test_folder_rule_matches_documented_composite(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "m", WEIGHTS | EXTRAS)
    assert ModelHash().hash(root) == "blake3:" + folder_expected(WEIGHTS)
    sha = lambda d: hashlib.sha256(d).hexdigest()  # noqa: E731
    assert ModelHash("sha256").hash(root) == "sha256:" + folder_expected(WEIGHTS, sha)


def test_folder_hash_is_independent_of_creation_order(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", WEIGHTS)
    b = make_folder(tmp_path / "b", dict(reversed(list(WEIGHTS.items()))))
    assert ModelHash().hash(a) == ModelHash().hash(b)


def test_folder_ignores_non_weight_and_hidden_files(tmp_path: Path) -> None:
    plain = make_folder(tmp_path / "plain", WEIGHTS)
    noisy = make_folder(tmp_path / "noisy", WEIGHTS | EXTRAS)
    assert ModelHash().hash(plain) == ModelHash().hash(noisy)


def test_renaming_a_weight_file_changes_the_folder_hash(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "m", WEIGHTS)
    before = ModelHash().hash(root)
    (root / "z.ckpt").rename(root / "y.ckpt")
    assert ModelHash().hash(root) != before
    # Swapping the contents of two files (same names, same set of digests) changes it too.
    swapped = make_folder(tmp_path / "s", WEIGHTS | {"z.ckpt": b"gguf", "a.gguf": b"ckpt"})
    assert ModelHash().hash(swapped) != ModelHash().hash(make_folder(tmp_path / "orig", WEIGHTS))


def test_changing_weight_content_changes_the_folder_hash(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "m", WEIGHTS)
    before = ModelHash().hash(root)
    write(root / "vae/diffusion_pytorch_model.safetensors", b"other-vae")
    assert ModelHash().hash(root) != before


def test_file_filter_override(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "m", WEIGHTS | EXTRAS)
    only_json = ModelHash(file_filter=lambda rel: rel.endswith(".json"))
    expected = folder_expected({"model_index.json": b"{}", "unet/config.json": b'{"a": 1}'})
    assert only_json.hash(root) == "blake3:" + expected
    with pytest.raises(HashingError, match="matches the file filter"):
        ModelHash(file_filter=lambda rel: False).hash(root)


def test_folder_follows_symlinks_and_stops_at_loops(tmp_path: Path) -> None:
    shared = make_folder(tmp_path / "shared", {"vae.safetensors": b"vae"})
    root = make_folder(tmp_path / "m", {"unet.safetensors": b"unet"})
    (root / "vae").symlink_to(shared, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "text.bin").symlink_to(write(tmp_path / "blob", b"te"))
    expected = folder_expected({"unet.safetensors": b"unet", "vae/vae.safetensors": b"vae", "text.bin": b"te"})
    assert ModelHash().hash(root) == "blake3:" + expected


def test_broken_weight_symlink_is_an_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "m", {"unet.safetensors": b"unet"})
    (root / "vae.safetensors").symlink_to(tmp_path / "gone.safetensors")
    (root / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not a weight file: ignored
    with pytest.raises(HashingPathNotFoundError, match=r"vae\.safetensors: broken symlink"):
        ModelHash().hash(root)


def test_empty_folder_and_folder_without_weights(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HashingError, match="empty: no weight files") as info:
        ModelHash().hash(empty)
    assert info.value.path == empty
    configs = make_folder(tmp_path / "configs", EXTRAS)
    with pytest.raises(HashingError, match="configs: no weight files"):
        ModelHash().hash(configs)


# --- errors ---------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    calls = (lambda: ModelHash().hash(missing), lambda: civitai_hashes(missing), lambda: autov1(missing))
    for call in (*calls, lambda: autov3(missing)):
        with pytest.raises(HashingError) as info:
            call()
        assert isinstance(info.value, FileNotFoundError)
        assert info.value.errno == errno.ENOENT
        assert str(missing) in str(info.value)
        assert info.value.path == missing


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read a mode-000 file")
def test_unreadable_file_real(tmp_path: Path) -> None:
    path = write(tmp_path / "m.safetensors", b"x")
    path.chmod(0)
    try:
        for algorithm in ("blake3", "sha256"):
            with pytest.raises(HashingPermissionError, match="permission denied"):
                ModelHash(algorithm).hash(path)
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("algorithm", ["blake3", "blake3_single", "sha256"])
def test_unreadable_file_translated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, algorithm: str) -> None:
    path = write(tmp_path / "m.safetensors", b"x")

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    class DeniedBlake3:
        AUTO = -1

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        update_mmap = denied

    monkeypatch.setattr(hashing, "blake3", DeniedBlake3)
    monkeypatch.setattr(hashing, "open", denied, raising=False)
    with pytest.raises(HashingPermissionError) as info:
        ModelHash(algorithm).hash(path)
    assert isinstance(info.value, PermissionError)
    assert isinstance(info.value.__cause__, PermissionError)
    assert str(path) in str(info.value)


def test_io_error_translated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "m.bin", b"x")

    def eio(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(hashing, "open", eio, raising=False)
    with pytest.raises(HashingError, match=r"m\.bin: Input/output error") as info:
        ModelHash("sha256").hash(path)
    assert info.value.errno == errno.EIO


def test_mmap_failure_falls_back_to_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = pseudo_random(100_000)
    path = write(tmp_path / "m.bin", data)
    real = hashing.blake3

    class NoMmap:
        AUTO = real.AUTO

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._h = real(*args, **kwargs)

        def update_mmap(self, path: str) -> None:
            raise OSError(errno.ENODEV, "No such device")

        def update(self, data: Any) -> None:
            self._h.update(data)

        def hexdigest(self) -> str:
            return str(self._h.hexdigest())

    monkeypatch.setattr(hashing, "blake3", NoMmap)
    assert ModelHash("blake3").hash(path) == f"blake3:{b3(data)}"


def test_special_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(HashingError, match="not a regular file"):
        ModelHash().hash(fifo)
    with pytest.raises(HashingError, match="not a regular file"):
        ModelHash().hash(tmp_path)  # the folder walk finds the fifo as a weight file
    for helper in (civitai_hashes, autov1, autov3):
        with pytest.raises(HashingError, match="not a regular file"):
            helper(fifo)


# --- Civitai hashes -------------------------------------------------------------------------------


def make_safetensors(path: Path, payload: bytes, metadata: dict[str, str] | None = None) -> bytes:
    """A valid single-tensor safetensors file built by hand; returns the whole file's bytes."""
    header: dict[str, Any] = {"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data = struct.pack("<Q", len(raw)) + raw + payload
    write(path, data)
    return data


def reference_civitai(data: bytes, header_end: int | None) -> dict[str, str | None]:
    sha = hashlib.sha256(data).hexdigest().upper()
    return {
        "sha256": sha,
        "autov1": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8].upper() if len(data) >= 2 << 20 else None,
        "autov2": sha[:10],
        "autov3": hashlib.sha256(data[header_end:]).hexdigest().upper() if header_end is not None else None,
        "crc32": struct.pack("<I", zlib.crc32(data)).hex().upper(),
        "blake3": b3(data).upper(),
    }


@pytest.mark.parametrize("buffer_size", [4099, 65536, hashing.BUFFER_SIZE])
def test_civitai_hashes_of_safetensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, buffer_size: int) -> None:
    # Small odd buffers put the header end and the AutoV1 window across chunk boundaries.
    monkeypatch.setattr(hashing, "BUFFER_SIZE", buffer_size)
    path = tmp_path / "lora.safetensors"
    data = make_safetensors(path, pseudo_random(3 * 2**20 + 17), {"ss_network_dim": "16"})
    (header_len,) = struct.unpack("<Q", data[:8])
    got = civitai_hashes(path)
    assert got == CivitaiHashes(**reference_civitai(data, 8 + header_len))  # type: ignore[arg-type]
    assert got.autov3 == autov3(path)
    assert got.autov1 == autov1(path)
    assert got.autov2 == autov2(got.sha256.lower())


def test_autov3_ignores_metadata_edits(tmp_path: Path) -> None:
    payload = pseudo_random(10_000)
    a = civitai_hashes_of(tmp_path / "a.safetensors", payload, {"name": "one"})
    b = civitai_hashes_of(tmp_path / "b.safetensors", payload, {"name": "two", "x": "y"})
    assert a.autov3 == b.autov3 == hashlib.sha256(payload).hexdigest().upper()
    assert a.sha256 != b.sha256


def civitai_hashes_of(path: Path, payload: bytes, metadata: dict[str, str]) -> CivitaiHashes:
    make_safetensors(path, payload, metadata)
    return civitai_hashes(path)


def test_civitai_hashes_agree_with_the_safetensors_library(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    st_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "m.safetensors"
    tensors = {"a": np.arange(1000, dtype=np.float32), "b": np.ones((7, 3), dtype=np.float16)}
    st_numpy.save_file(tensors, str(path), metadata={"k": "v"})
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert civitai_hashes(path).autov3 == hashlib.sha256(data[8 + n :]).hexdigest().upper()


def test_civitai_hashes_of_other_files(tmp_path: Path) -> None:
    ckpt = write(tmp_path / "model.ckpt", data := pseudo_random(2 * 2**20))
    got = civitai_hashes(ckpt)
    assert got == CivitaiHashes(**reference_civitai(data, None))  # type: ignore[arg-type]
    assert got.autov3 is None and got.autov1 is not None
    assert autov3(ckpt) is None
    small = write(tmp_path / "tiny.pt", b"tiny")
    assert civitai_hashes(small).autov1 is None
    assert autov1(small) is None
    # A .safetensors file with a broken header: no AutoV3, the other hashes still computed.
    broken = write(tmp_path / "broken.safetensors", struct.pack("<Q", 5) + b"{nope" + b"data")
    got = civitai_hashes(broken)
    assert got.autov3 is None
    assert autov3(broken) is None
    assert got.sha256 == hashlib.sha256(broken.read_bytes()).hexdigest().upper()


def test_civitai_crc32_byte_order_and_dict() -> None:
    # CRC-32 check value of "123456789" is 0xCBF43926; .NET's Crc32 (Civitai) emits it little-endian.
    h = CivitaiHashes(sha256="A" * 64, autov1=None, autov2="A" * 10, autov3=None, crc32="2639F4CB", blake3="B" * 64)
    assert h.crc32_zlib == f"{zlib.crc32(b'123456789'):08X}" == "CBF43926"
    assert h.as_dict() == {"SHA256": "A" * 64, "AutoV2": "A" * 10, "CRC32": "2639F4CB", "BLAKE3": "B" * 64}
    assert h.matches("aaaaaaaaaa") and h.matches("cbf43926") and not h.matches("1234")


def test_autov2_helper() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert autov2(sha) == sha[:10].upper()
    assert autov2("sha256:" + sha) == sha[:10].upper()
    for bad in ("abc", "z" * 64):
        with pytest.raises(ValueError, match="not a SHA-256"):
            autov2(bad)


def test_file_that_changes_size_while_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "m.ckpt", b"x" * 1000)
    real = hashing._civitai_pass

    def grow_then_hash(p: Path, size: int, offset: int | None) -> CivitaiHashes:
        with open(p, "ab") as f:
            f.write(b"more")
        return real(p, size, offset)

    monkeypatch.setattr(hashing, "_civitai_pass", grow_then_hash)
    with pytest.raises(HashingError, match="changed size while hashing"):
        civitai_hashes(path)


# --- streaming ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "reference"),
    [
        ("blake3", b3),
        ("blake3_single", b3),
        ("sha256", lambda d: hashlib.sha256(d).hexdigest()),
        ("shake_128", lambda d: hashlib.shake_128(d).hexdigest(32)),
    ],
)
def test_streaming_hasher(algorithm: str, reference: Callable[[bytes], str]) -> None:
    data = pseudo_random(5 * 2**20 + 99, seed=7)
    h = StreamingHasher(algorithm)
    # Mixed piece sizes: tiny, exactly the batch size, larger than it, and memoryviews.
    pos = 0
    for size in [1, 100, 65536, 1 << 20, 3 << 20, 7, 4096]:
        piece = data[pos : pos + size]
        h.update(memoryview(piece) if size % 2 else piece)
        pos += size
    h.update(bytearray(data[pos:]))
    assert h.bytes_hashed == len(data)
    assert h.hexdigest() == reference(data)
    prefix = "blake3" if algorithm.startswith("blake3") else algorithm
    assert h.prefixed() == f"{prefix}:{reference(data)}"


def test_streaming_hasher_matches_model_hash(tmp_path: Path) -> None:
    data = pseudo_random(300_000)
    path = write(tmp_path / "m.bin", data)
    h = StreamingHasher()
    with open(path, "rb") as f:
        while chunk := f.read(8192):
            h.update(chunk)
    assert h.prefixed() == ModelHash().hash(path)


# --- hash cache -----------------------------------------------------------------------------------


def test_cache_hit_does_not_read_again(db: Database, tmp_path: Path, count_reads: list[Path]) -> None:
    path = write(tmp_path / "m.safetensors", data := pseudo_random(50_000))
    hasher = ModelHash(cache=HashCache(db))
    assert hasher.hash(path) == f"blake3:{b3(data)}"
    assert hasher.hash(path) == f"blake3:{b3(data)}"
    assert count_reads == [path]
    # blake3_single shares the digest and the cache entry; sha256 does not.
    assert ModelHash("blake3_single", cache=hasher.cache).hash(path) == f"blake3:{b3(data)}"
    assert len(count_reads) == 1
    ModelHash("sha256", cache=hasher.cache).hash(path)
    assert len(count_reads) == 2


def test_cache_survives_reopening_the_database(tmp_path: Path, count_reads: list[Path]) -> None:
    path = write(tmp_path / "m.bin", b"weights")
    db_path = tmp_path / "db.sqlite"
    first = Database.open(db_path)
    ModelHash(cache=HashCache(first)).hash(path)
    first.close()
    second = Database.open(db_path)
    assert ModelHash(cache=HashCache(second)).hash(path) == f"blake3:{b3(b'weights')}"
    second.close()
    assert len(count_reads) == 1


def test_cache_invalidated_by_in_place_rewrite_same_size(db: Database, tmp_path: Path, count_reads: list[Path]) -> None:
    path = write(tmp_path / "m.bin", b"AAAA", age_ns=2 * HOUR_NS)
    hasher = ModelHash(cache=HashCache(db))
    assert hasher.hash(path) == f"blake3:{b3(b'AAAA')}"
    ino = path.stat().st_ino
    with open(path, "r+b") as f:  # same inode, same size, new content
        f.write(b"BBBB")
    t = time.time_ns() - HOUR_NS
    os.utime(path, ns=(t, t))
    assert path.stat().st_ino == ino
    assert hasher.hash(path) == f"blake3:{b3(b'BBBB')}"
    assert len(count_reads) == 2
    assert hasher.hash(path) == f"blake3:{b3(b'BBBB')}"
    assert len(count_reads) == 2


def test_cache_invalidated_by_size_change(db: Database, tmp_path: Path, count_reads: list[Path]) -> None:
    path = write(tmp_path / "m.bin", b"AAAA")
    hasher = ModelHash(cache=HashCache(db))
    hasher.hash(path)
    st = path.stat()
    with open(path, "ab") as f:
        f.write(b"!")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime restored
    assert hasher.hash(path) == f"blake3:{b3(b'AAAA!')}"
    assert len(count_reads) == 2


def test_rename_keeps_the_cache_entry(sqlite_db: Database, tmp_path: Path, count_reads: list[Path]) -> None:
    path = write(tmp_path / "m.bin", b"weights")
    hasher = ModelHash(cache=HashCache(sqlite_db))
    hasher.hash(path)
    moved = path.rename(tmp_path / "renamed.bin")
    assert hasher.hash(moved) == f"blake3:{b3(b'weights')}"
    assert len(count_reads) == 1


def test_racy_file_is_not_cached(sqlite_db: Database, tmp_path: Path, count_reads: list[Path]) -> None:
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"just written")  # mtime = now: a same-tick rewrite could go unseen
    cache = HashCache(sqlite_db)
    hasher = ModelHash(cache=cache)
    hasher.hash(path)
    hasher.hash(path)
    assert len(count_reads) == 2
    assert cache.get(path, "blake3") is None
    # With a zero window (a caller that knows its file system), the same file is cached.
    hasher.cache = HashCache(sqlite_db, racy_window_ns=0)
    hasher.hash(path)
    hasher.hash(path)
    assert len(count_reads) == 3


def test_file_modified_while_hashing_is_not_cached(
    sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "m.bin", b"AAAA")
    real = hashing._file_hex

    def hash_then_touch(p: Path, algorithm: str) -> str:
        digest = real(p, algorithm)
        t = time.time_ns() - HOUR_NS // 2
        os.utime(p, ns=(t, t))
        return digest

    monkeypatch.setattr(hashing, "_file_hex", hash_then_touch)
    cache = HashCache(sqlite_db)
    ModelHash(cache=cache).hash(path)
    assert len(cache) == 0


def test_folder_is_cached_per_file(db: Database, tmp_path: Path, count_reads: list[Path]) -> None:
    root = make_folder(tmp_path / "m", WEIGHTS)
    hasher = ModelHash(cache=HashCache(db))
    first = hasher.hash(root)
    assert len(count_reads) == len(WEIGHTS)
    assert hasher.hash(root) == first
    assert len(count_reads) == len(WEIGHTS)
    write(root / "z.ckpt", b"new ckpt")
    assert hasher.hash(root) == "blake3:" + folder_expected(WEIGHTS | {"z.ckpt": b"new ckpt"})
    assert count_reads[-1] == root / "z.ckpt"
    assert len(count_reads) == len(WEIGHTS) + 1


def test_civitai_hashes_use_and_fill_the_cache(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count_reads: list[Path]
) -> None:
    path = tmp_path / "lora.safetensors"
    make_safetensors(path, pseudo_random(70_000))
    cache = HashCache(db)
    first = civitai_hashes(path, cache=cache)
    passes: list[Path] = []
    monkeypatch.setattr(hashing, "_civitai_pass", lambda p, *a: passes.append(p))
    assert civitai_hashes(path, cache=cache) == first
    assert passes == []
    # The one pass also recorded the file's sha256 and blake3 for ModelHash.
    assert ModelHash("sha256", cache=cache).hash(path) == "sha256:" + first.sha256.lower()
    assert ModelHash("blake3", cache=cache).hash(path) == "blake3:" + first.blake3.lower()
    assert count_reads == []


def test_cache_get_put_api(db: Database, tmp_path: Path) -> None:
    cache = HashCache(db)
    path = write(tmp_path / "m.bin", b"abc")
    assert cache.get(path, "blake3") is None
    cache.put(path, "blake3", "blake3:feed")
    assert cache.get(path, "blake3") == "blake3:feed"
    assert cache.get(str(path), "sha256") is None
    cache.put(path, "blake3", "blake3:beef")  # replaces, does not duplicate
    assert cache.get(path, "blake3") == "blake3:beef"
    assert len(cache) == 1
    assert cache.get(tmp_path / "missing", "blake3") is None
    with pytest.raises(HashingError, match="not a regular file"):
        cache.put(tmp_path, "blake3", "blake3:00")
    with pytest.raises(HashingError, match="missing"):
        cache.put(tmp_path / "missing", "blake3", "blake3:00")
    t = time.time_ns()
    os.utime(path, ns=(t, t))
    assert cache.get(path, "blake3") is None
    assert cache.forget(path) == 1
    assert len(cache) == 0


def test_cache_handles_unsigned_64bit_device_and_inode(db: Database, tmp_path: Path) -> None:
    cache = HashCache(db)
    path = write(tmp_path / "m.bin", b"abc")
    real = path.stat()
    fake: Any = types.SimpleNamespace(
        st_mode=real.st_mode, st_dev=2**64 - 5, st_ino=2**63 + 11, st_size=3, st_mtime_ns=real.st_mtime_ns
    )
    cache.put(path, "blake3", "blake3:big", st=fake)
    assert cache.lookup(fake, "blake3") == "blake3:big"
    other: Any = types.SimpleNamespace(**(vars(fake) | {"st_ino": 11}))
    assert cache.lookup(other, "blake3") is None


def test_cache_prune_and_clear(db: Database, tmp_path: Path) -> None:
    cache = HashCache(db)
    keep = write(tmp_path / "keep.bin", b"k")
    gone = write(tmp_path / "gone.bin", b"g")
    changed = write(tmp_path / "changed.bin", b"c")
    hasher = ModelHash(cache=cache)
    for p in (keep, gone, changed):
        hasher.hash(p)
    gone.unlink()
    write(changed, b"cc")
    assert cache.prune() == 2
    assert len(cache) == 1
    assert cache.get(keep, "blake3") is not None
    cache.clear()
    assert len(cache) == 0


def test_cache_is_thread_safe(sqlite_db: Database, tmp_path: Path, count_reads: list[Path]) -> None:
    files = {i: write(tmp_path / f"f{i}.bin", pseudo_random(20_000, seed=i)) for i in range(16)}
    hasher = ModelHash(cache=HashCache(sqlite_db))
    errors: list[BaseException] = []
    results: dict[int, set[str]] = {i: set() for i in files}
    barrier = threading.Barrier(8)

    def work(offset: int) -> None:
        try:
            barrier.wait(timeout=60)
            for round_ in range(3):
                for i in files:
                    j = (i + offset + round_) % len(files)
                    results[j].add(hasher.hash(files[j]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for i, path in files.items():
        assert results[i] == {f"blake3:{b3(path.read_bytes())}"}
    # Threads may race on a first hash, but never re-read a file once its digest is stored.
    assert len(count_reads) <= len(files) * 8
    before = len(count_reads)
    for path in files.values():
        hasher.hash(path)
    assert len(count_reads) == before


def test_public_names() -> None:
    for name in hashing.__all__:
        assert hasattr(hashing, name), name
