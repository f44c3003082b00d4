"""End-to-end install of a multi-file repo from fakehub, against the download alone.

    python benchmarks/bench_install.py [--gib 2] [--files 5]

Same fakehub, same files, same machine, one run: (1) the download queue fetching the repo's files
into a folder (the baseline), (2) ``modeldepot install org/repo`` (download + identify + store +
record + materialise), (3) installing the same repo again (no bytes may be downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from modeldepot.download import ConnectPolicy, DownloadQueueService, RemoteFile
from modeldepot.manager import ModelManager
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

MiB = 1024 * 1024


def make_repo(root: Path, total: int, nfiles: int) -> dict[str, Path]:
    """A diffusers-looking repo: real configs, big weight files made of random blocks."""
    pipe = factories.write_diffusers_pipeline(root / "pipe")
    files = {p.relative_to(pipe).as_posix(): p for p in pipe.rglob("*") if p.is_file()}
    weights = [k for k in files if k.endswith(".safetensors")][:nfiles]
    block = os.urandom(64 * MiB)
    per = total // len(weights)
    for k in weights:
        # Keep the header of the tiny real file (so identification works), pad the data region.
        src = files[k]
        big = root / "big" / k
        big.parent.mkdir(parents=True, exist_ok=True)
        header = src.read_bytes()
        import struct

        n = struct.unpack("<Q", header[:8])[0]
        meta = json.loads(header[8 : 8 + n])
        pad = per - len(header)
        meta["__metadata__"] = {**meta.get("__metadata__", {}), "bench": "x"}
        # A tensor that covers the padding, so the file stays a valid safetensors file.
        data_len = len(header) - 8 - n
        meta["bench.padding"] = {"dtype": "U8", "shape": [pad], "data_offsets": [data_len, data_len + pad]}
        head = json.dumps(meta).encode()
        with big.open("wb") as f:
            f.write(struct.pack("<Q", len(head)) + head + header[8 + n :])
            left = pad
            while left:
                chunk = block[: min(left, len(block))]
                f.write(chunk)
                left -= len(chunk)
        files[k] = big
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--files", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modeldepot-bench-install-", dir="/tmp"))
    try:
        files = make_repo(work / "src", int(args.gib * 1024**3), args.files)
        total = sum(p.stat().st_size for p in files.values())
        with FakeHub() as hub:
            hub.add_hf_repo("bench/repo", {k: p for k, p in files.items()})
            # Baseline: the download queue alone, same files, same endpoint.
            from modeldepot.remote import HuggingFaceClient

            with HuggingFaceClient(hub.url) as client:
                info, sel = client.select_files("bench/repo")
                parts = [
                    RemoteFile(
                        url=client.resolve_url("bench/repo", info.sha, f.path),
                        path=f.path,
                        size=f.size,
                        sha256=f.sha256,
                    )
                    for f in sel.files
                ]
            q = DownloadQueueService(policy=ConnectPolicy.of([hub.url]))
            q.start()
            t = time.perf_counter()
            job = q.multifile_download(parts, work / "dl")
            q.wait_for_job(job)
            t_download = time.perf_counter() - t
            q.stop()
            assert job.complete, job.error
            shutil.rmtree(work / "dl")

            with ModelManager.open(
                home=work / "home", hf_endpoint=hub.url, allow_private_urls=True, link_modes=["hardlink", "copy"]
            ) as mm:
                t = time.perf_counter()
                first = mm.install.wait_for_job(mm.install.heuristic_import("bench/repo"))
                t_install = time.perf_counter() - t
                assert first.complete, first.error
                hub.stats.reset()
                t = time.perf_counter()
                second = mm.install.wait_for_job(mm.install.heuristic_import("bench/repo"))
                t_again = time.perf_counter() - t
                assert second.complete
                bytes_again = hub.stats.bytes_sent_total
        rows = [
            ("download alone (queue, multi-file)", t_download, total / t_download / MiB, 1.0),
            ("install end to end", t_install, total / t_install / MiB, t_install / t_download),
        ]
        print(f"repo: {len(files)} files, {len(parts)} selected, {total / 1024**3:.2f} GiB\n")
        print("| measurement | seconds | MiB/s | ratio to download |")
        print("|---|---:|---:|---:|")
        for name, s, mbs, r in rows:
            print(f"| {name} | {s:.2f} | {mbs:.0f} | {r:.2f} |")
        print(f"| install again (same source) | {t_again:.3f} | - | bytes downloaded: {bytes_again} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
