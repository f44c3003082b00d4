"""Fleet mode (issue 19): pulling a model from the bucket vs downloading it from fakehub, and the bytes
that cross "the internet" (fakehub) when N workers ask for the same new model at once.

    python benchmarks/bench_fleet.py [--size-mb 1024] [--rounds 3] [--workers 1,2,4]

Servers, each in its own process: fakehub (``bench_download.RemoteHub``), a local S3 server
(``python -m modeldepot.testing.s3server``, moto: objects in memory) and PostgreSQL at
127.0.0.1:5432 (a fresh database per fleet, dropped at the end). The model is one safetensors file
of ``--size-mb`` (a tiny SD-1 VAE whose header also names a padding tensor of random bytes), so
``modeldepot install`` identifies it as a model.

Per round, in a rotating order, each client in a fresh process, ``os.sync()`` before each:

1. ``modeldepot install URL`` on a fresh home outside any fleet: download + hash + store (the peer);
2. ``modeldepot pull KEY`` on a fresh worker home: the blob from the bucket (verified) + store;
3. ``curl -s -o`` of the same URL (the absolute peer: bytes on disk, nothing checked);
4. ``modeldepot pull KEY`` again on that home: nothing to fetch (what the command costs by itself);
5. ``curl -s -o`` of the bucket object (one GET of a presigned URL): what the S3 server gives one
   stream;
6. the fleet's S3 client (``S3BlobTier.download``, blake3 check included) in a fresh process,
   timed inside it: with its default ranges (one per stream, 5 streams, each at least 64 MiB) in
   parallel, and as one GET.

5 and 6 tell the server's cost from the client's: moto reads the whole object for every ranged
GET (a 1 MiB range of a 1 GiB object takes ~1.2 s here, the whole object ~2.7 s), so a client that
fetches an object in parts pays the object's size once per part. The ratios are per round;
tables give the median (min-max) over rounds.

Then, for each N of ``--workers``: a new fleet (fresh database, new bucket prefix), N fresh
workers start ``install URL`` at once; fakehub's bytes sent / the model size, and the wall time
until the last one exits. Temp files live under /tmp/modeldepot-bench-fleet/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_download import RemoteHub

from modeldepot.testing import factories

MB = 1_000_000
MiB = 1 << 20
ROOT = Path("/tmp/modeldepot-bench-fleet")
PG_ADMIN = os.environ.get("MODELDEPOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BUCKET = "bench-fleet"


def make_model(path: Path, size: int) -> Path:
    """A tiny SD-1 VAE (so identification and install work) padded to ``size`` bytes by one U8 tensor
    of random data (64 MiB of urandom repeated: nothing compresses it, and the blob is one file)."""
    small = factories.write_vae(ROOT / "small-vae.safetensors", seed=7)
    raw = small.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    meta = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    pad = max(size - len(raw) - 256, 0)
    meta["bench.padding"] = {"dtype": "U8", "shape": [pad], "data_offsets": [len(data), len(data) + pad]}
    head = json.dumps(meta).encode()
    head += b" " * (-len(head) % 8)  # safetensors aligns the data to 8 bytes
    block = os.urandom(64 * MiB)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + data)
        left = pad
        while left:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            left -= len(chunk)
    return path


# -- servers ------------------------------------------------------------------------------------


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """``python -m modeldepot.testing.s3server`` in its own process; the AWS environment pointing at it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldepot.testing.s3server", "--bucket", BUCKET],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("endpoint "):
            raise SystemExit(f"the S3 server did not start: {line!r}")
        yield {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": line.split(" ", 1)[1],
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Databases:
    """Fresh PostgreSQL databases (``bench_fleet_<random>``), all dropped by ``drop_all``."""

    def __init__(self) -> None:
        import psycopg

        self._psycopg = psycopg
        self.names: list[str] = []

    def new(self) -> str:
        name = f"bench_fleet_{uuid.uuid4().hex[:12]}"
        with self._psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"

    def drop_all(self) -> None:
        with self._psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- clients ------------------------------------------------------------------------------------


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELDEPOT_", "AWS_"))}
    env.update(
        {
            "MODELDEPOT_ALLOW_PRIVATE_URLS": "true",
            "MODELDEPOT_LINK_MODES": "hardlink,copy",
            "XDG_CACHE_HOME": str(ROOT / "xdg-cache"),
        }
    )
    return env


def fleet_env(aws: dict[str, str], db: str, prefix: str) -> dict[str, str]:
    return {**base_env(), **aws, "MODELDEPOT_DB": db, "MODELDEPOT_BLOB_REMOTE": f"s3://{BUCKET}/{prefix}"}


def modeldepot(env: dict[str, str], home: Path, *args: str) -> tuple[float, Any]:
    """Wall time of ``modeldepot ARGS --json --home HOME`` (start-up included), and its output."""
    cmd = [sys.executable, "-m", "modeldepot", *args, "--json", "--home", str(home)]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"`modeldepot {' '.join(args)}` exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return elapsed, json.loads(r.stdout)


_TIER = """
import json, sys, time
from pathlib import Path
from modeldepot.fleet._s3 import S3BlobTier
url, digest, dest, size, part = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
tier = S3BlobTier(url, part_size=part, concurrency=5)  # 5: max_parallel_downloads' default, as the fleet builds it
t = time.perf_counter()
tier.download(digest, dest, size=size)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def tier_download(env: dict[str, str], url: str, digest: str, dest: Path, size: int, part: int) -> float:
    """``S3BlobTier.download`` in a fresh process, timed inside it (imports and client set-up excluded)."""
    cmd = [sys.executable, "-c", _TIER, url, digest, str(dest), str(size), str(part)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"S3BlobTier.download failed:\n{r.stderr}")
    seconds: float = json.loads(r.stdout.strip().splitlines()[-1])["seconds"]
    return seconds


def curl(url: str, dest: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["curl", "-s", "-o", str(dest), url], check=True)
    return time.perf_counter() - t


def summary(values: list[float], digits: int = 3) -> str:
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# -- 1. pull from the bucket vs download from fakehub ---------------------------------------------


def bench_pull(hub: RemoteHub, aws: dict[str, str], dbs: Databases, url: str, size: int, rounds: int) -> list[str]:
    env = fleet_env(aws, dbs.new(), "pull")
    _, [job] = modeldepot(env, fresh(ROOT / "seed"), "install", url)  # the fleet's first worker
    assert job["complete"] and job["outcome"] == "installed", job
    key = job["config_out"]["key"]
    shutil.rmtree(ROOT / "seed")  # the bucket and the database keep the model
    prefix = f"s3://{BUCKET}/pull"
    client = _client(aws)
    [obj] = client.list_objects_v2(Bucket=BUCKET, Prefix="pull/")["Contents"]
    digest = str(obj["Key"]).rsplit("/", 1)[1]
    params = {"Bucket": BUCKET, "Key": obj["Key"]}
    object_url = client.generate_presigned_url("get_object", Params=params, ExpiresIn=3600)
    names = [
        "install from fakehub",
        "pull from the bucket",
        "curl",
        "curl of the bucket object",
        "S3 client, ranged GETs",
        "S3 client, one GET",
    ]
    if not shutil.which("curl"):
        names = [n for n in names if not n.startswith("curl")]
    times: dict[str, list[float]] = {n: [] for n in [*names, "pull, already local"]}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            work = fresh(ROOT / "work")
            os.sync()
            if name == "install from fakehub":
                t, [job] = modeldepot(base_env(), work / "home", "install", url)
                assert job["complete"] and job["outcome"] == "installed", job
            elif name == "pull from the bucket":
                t, [res] = modeldepot(env, work / "home", "pull", key)
                assert res["bytes"] == size and not res["already_local"], res
                times["pull, already local"].append(modeldepot(env, work / "home", "pull", key)[0])
            elif name.startswith("S3 client"):
                part = 64 * MiB if "parts" in name else 2 * size
                t = tier_download(env, prefix, digest, work / "blob", size, part)
            else:
                t = curl(url if name == "curl" else object_url, work / "model.safetensors")
                got = work / "model.safetensors"
                assert got.stat().st_size == size, f"{name}: {got.stat().st_size} bytes: {got.read_bytes()[:300]!r}"
            times[name].append(t)
        shutil.rmtree(ROOT / "work")
        line = ", ".join(f"{n} {times[n][-1]:.2f} s" for n in times)
        print(f"round {r + 1}: {line}", file=sys.stderr, flush=True)
    mb = size / MB
    lines = [
        f"### Pull from the bucket vs download from fakehub ({mb:.0f} MB, {rounds} rounds)",
        "",
        "| measurement (fresh process, start-up included; S3 client: timed inside) | s, median (min-max) | MB/s |",
        "|---|---:|---:|",
    ]
    for n, values in times.items():
        rate = "-" if n == "pull, already local" else f"{mb / median(values):.0f}"
        lines.append(f"| {n} | {summary(values)} | {rate} |")
    lines += ["", "| ratio per round | median (min-max) |", "|---|---:|"]
    pull, inst = times["pull from the bucket"], times["install from fakehub"]
    lines.append(f"| pull / install from fakehub | {summary([p / i for p, i in zip(pull, inst, strict=True)])} |")
    for a, b in (
        ("pull from the bucket", "curl"),
        ("install from fakehub", "curl"),
        ("curl of the bucket object", "curl"),
        ("S3 client, ranged GETs", "S3 client, one GET"),
        ("S3 client, one GET", "curl of the bucket object"),
    ):
        if a in times and b in times:
            ratios = [x / y for x, y in zip(times[a], times[b], strict=True)]
            lines.append(f"| {a} / {b} | {summary(ratios)} |")
    return lines


def _client(aws: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name=aws["AWS_DEFAULT_REGION"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}),
    )


# -- 2. bytes from fakehub for N workers ----------------------------------------------------------


def bench_workers(
    hub: RemoteHub, aws: dict[str, str], dbs: Databases, url: str, size: int, counts: list[int]
) -> list[str]:
    lines = [
        f"### N workers install the same new model at once ({size / MB:.0f} MB)",
        "",
        "| workers | bytes from fakehub / model size | outcomes | wall time until the last exits, s |",
        "|---:|---:|---|---:|",
    ]
    for n in counts:
        env = fleet_env(aws, dbs.new(), f"workers-{n}-{uuid.uuid4().hex[:8]}")
        work = fresh(ROOT / "work")
        os.sync()
        hub.call("reset")
        t = time.perf_counter()
        procs = []
        for w in range(n):
            out = (work / f"out-{w}.json").open("w")
            cmd = [sys.executable, "-m", "modeldepot", "install", url, "--json", "--home", str(work / f"w{w}")]
            procs.append((subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.DEVNULL), out))
        for proc, out in procs:
            proc.wait()
            out.close()
        elapsed = time.perf_counter() - t
        sent = hub.call("bytes")
        outcomes: dict[str, int] = {}
        for w, (proc, _) in enumerate(procs):
            if proc.returncode:
                raise SystemExit(f"worker {w} of {n} exited {proc.returncode}")
            [job] = json.loads((work / f"out-{w}.json").read_text())
            outcomes[job["outcome"]] = outcomes.get(job["outcome"], 0) + 1
        said = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        lines.append(f"| {n} | {sent / size:.3f} | {said} | {elapsed:.1f} |")
        print(f"{n} worker(s): {sent / size:.3f}x the model from fakehub, {said}, {elapsed:.1f} s", file=sys.stderr)
        shutil.rmtree(work)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="model size in MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4", help="worker counts for the bytes-from-fakehub table")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    fresh(ROOT)
    model = make_model(ROOT / "model.safetensors", args.size_mb * MB)
    size = model.stat().st_size
    hub = RemoteHub()
    dbs = Databases()
    try:
        url = hub.call("add_file", "/files/bench/model.safetensors", model)
        with s3_server() as aws:
            out = [
                f"bench_fleet.py --size-mb {args.size_mb} --rounds {args.rounds} --workers {args.workers}"
                f" · {os.cpu_count()} cores · load {os.getloadavg()[0]:.2f} at the start",
                "",
                *bench_pull(hub, aws, dbs, url, size, args.rounds),
                "",
                *bench_workers(hub, aws, dbs, url, size, counts),
            ]
    finally:
        hub.close()
        dbs.drop_all()
        shutil.rmtree(ROOT, ignore_errors=True)
    print("\n".join(out))


if __name__ == "__main__":
    main()
