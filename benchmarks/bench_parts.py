"""What recording a single-file checkpoint's parts costs the install (issue 14).

    python benchmarks/bench_parts.py [--gib 2] [--rounds 5] --before WORKTREE/src

A synthetic SDXL-layout checkpoint (2,600 F16 tensors under the LDM prefixes: unet, vae, two text
encoders) is installed into a fresh home, each measurement in a fresh process, rounds interleaved
in alternating order (after and before swap places every other round):

- copy mode (``install_path``): this code (part hashes taken while the file is copied and hashed)
  against the code in ``--before`` (no parts), and ``cp`` + ``sync`` of the file as the peer;
- move mode (``install_path(move=True)``: hashed by mmap, then hardlinked): this code against
  ``--before``, and blake3 of the file (``blake3.update_mmap``, what the store runs) as the peer.

The ratios are per round (after ÷ before, and each ÷ its peer), then the median and min-max.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

MiB = 1024 * 1024
#: (prefix, tensors, share of the bytes): an SDXL single file's rough proportions.
LAYOUT = (
    ("model.diffusion_model.", 1680, 0.72),
    ("first_stage_model.", 248, 0.03),
    ("conditioner.embedders.0.transformer.", 197, 0.05),
    ("conditioner.embedders.1.model.", 517, 0.20),
)


def make_checkpoint(path: Path, total: int) -> None:
    header: dict[str, object] = {}
    offset = 0
    for prefix, count, share in LAYOUT:
        nbytes = int(total * share) // count // 2 * 2
        for i in range(count):
            header[f"{prefix}block.{i}.weight"] = {
                "dtype": "F16",
                "shape": [nbytes // 2],
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    block = os.urandom(64 * MiB)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        left = offset
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def _child(kind: str, src: Path, work: Path) -> float:
    if kind == "cp":
        t = time.perf_counter()
        subprocess.run(["cp", str(src), str(work / "copy.safetensors")], check=True)
        subprocess.run(["sync", str(work / "copy.safetensors")], check=True)
        return time.perf_counter() - t
    if kind == "blake3":
        import blake3

        t = time.perf_counter()
        blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(str(src))
        return time.perf_counter() - t
    from modeldepot.manager import ModelManager

    move = kind.endswith("move")
    if move:
        moved = work / "incoming.safetensors"
        os.link(src, moved)  # move mode removes its source: give it a link of its own
        src = moved
    with ModelManager.open(home=work / "home") as mm:
        assert mm.install is not None  # imported and built before the clock starts
        t = time.perf_counter()
        mm.install.install_path(src, {"name": "bench"}, move=move)
        return time.perf_counter() - t


def run(kind: str, src: Path, before: str | None) -> float:
    env = dict(os.environ)
    if kind.startswith("before"):
        env["PYTHONPATH"] = str(before)
    with tempfile.TemporaryDirectory(dir=src.parent) as work:
        out = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--src", str(src), "--work", work],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", help="src/ of the code to compare with (a git worktree)")
    ap.add_argument("--dir", default=".", help="where the file and the homes go (/dev/shm: no disk noise)")
    ap.add_argument("--child")
    ap.add_argument("--src")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.child:
        print(_child(args.child, Path(args.src), Path(args.work)))
        return
    kinds = ["cp", "after-copy", "before-copy", "blake3", "after-move", "before-move"]
    if not args.before:
        kinds = [k for k in kinds if not k.startswith("before")]
    root = Path(tempfile.mkdtemp(prefix="bench-parts-", dir=args.dir))
    try:
        src = root / "sdxl.safetensors"
        make_checkpoint(src, int(args.gib * 1024**3))
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            # after/before swap places every other round, so each follows the peer and the other
            # equally often (on disk, a measurement pays for the writeback of the one before it).
            swap = {"after-copy": "before-copy", "before-copy": "after-copy"}
            swap |= {"after-move": "before-move", "before-move": "after-move"}
            order = kinds if r % 2 == 0 else [swap.get(k, k) for k in kinds]
            for kind in order:
                times[kind].append(run(kind, src, args.before))
            print(f"round {r + 1}: " + ", ".join(f"{k} {times[k][-1]:.3f}s" for k in kinds), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def ratio(a: str, b: str) -> str:
        rs = [x / y for x, y in zip(times[a], times[b], strict=True)]
        return f"{median(rs):.3f} ({min(rs):.3f}-{max(rs):.3f})"

    size = args.gib
    print(f"\n{args.gib} GiB SDXL-layout single file in {args.dir}, {args.rounds} rounds, medians (min-max)\n")
    print("| measurement | time | ratio |")
    print("|---|---|---|")
    for k in kinds:
        ts = times[k]
        print(f"| {k} | {median(ts):.3f} s ({min(ts):.3f}-{max(ts):.3f}) | {size / median(ts):.2f} GiB/s |")
    print()
    print(f"- after-copy ÷ cp+sync, per round: {ratio('after-copy', 'cp')}")
    print(f"- after-move ÷ blake3 of the file, per round: {ratio('after-move', 'blake3')}")
    if args.before:
        print(f"- before-copy ÷ cp+sync: {ratio('before-copy', 'cp')}")
        print(f"- before-move ÷ blake3: {ratio('before-move', 'blake3')}")
        print(f"- **after ÷ before, copy mode: {ratio('after-copy', 'before-copy')}**")
        print(f"- **after ÷ before, move mode: {ratio('after-move', 'before-move')}**")


if __name__ == "__main__":
    main()
