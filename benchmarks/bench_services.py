"""Services (issue 16): what the service layer costs over diffusers itself, measured in one run.

Run: python benchmarks/bench_services.py [--rounds 5] [--compile]

* txt2img: a 2-step 64x64 generation through ``Txt2Img`` against a diffusers
  ``StableDiffusionPipeline.from_pretrained`` of the same folder (built once, like a hand-written
  script), same scheduler and seed. Target <= 1.1x. Model: the factories' tiny SD-1-shaped pipeline
  (milliseconds per step, so any per-call overhead of the service shows in full).
* switch (a tiny pair, and an SD-1-shaped pair with a real-width CLIP-L): two checkpoints whose VAE,
  text encoder, tokenizer and scheduler are byte-identical (a base and a fine-tune). After
  ``Txt2Img.from_key(A)``, ``Txt2Img.from_key(B)``: bytes of weights the cache had to load (the
  entries it admitted, by size) against the unet's bytes. Target ~1x.
* lora: apply + restore of one kohya LoRA (rank 8, every attention projection of the SD-1-shaped
  unet and CLIP-L) through the services' patcher, against diffusers' own ``load_lora_weights`` +
  ``unload_lora_weights`` on the same pipeline. Ours twice: with the LoRA's state dict as the
  model cache holds it after its first use, and read from the file every time (as diffusers does).
  Target <= 1x.
* compile (``--compile``): denoising steps/s of ``Txt2Img`` with and without ``compile=True`` after
  warm-up (the one-time compile time is reported separately).

Rounds interleave the two ways (order alternating); each figure is the median (min-max) of the
per-round ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path("/tmp/modeldepot-bench-services")


def _timed(fn: Callable[[], Any], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def _rounds(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[list[float], list[float]]:
    ours, peer = [], []
    for i in range(rounds):
        if i % 2:
            p, o = b(), a()
        else:
            o, p = a(), b()
        ours.append(o)
        peer.append(p)
    return ours, peer


def _summary(name: str, ours: list[float], peer: list[float], unit: str = "ms") -> str:
    ratios = [o / p for o, p in zip(ours, peer, strict=True)]
    scale = 1000 if unit == "ms" else 1
    return (
        f"| {name} | {statistics.median(ours) * scale:.1f} | {statistics.median(peer) * scale:.1f} | "
        f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |"
    )


def bench_txt2img(mm: Any, key: str, folder: Path, rounds: int) -> str:
    import torch
    from diffusers import StableDiffusionPipeline

    from modeldepot.services import Txt2Img

    t2i = Txt2Img.from_key(mm, key)
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def ours() -> None:
        t2i("a lighthouse at dusk", steps=2, width=64, height=64, seed=1)

    def peer() -> None:
        gen = torch.Generator("cpu").manual_seed(1)
        with torch.inference_mode():
            pipe("a lighthouse at dusk", num_inference_steps=2, width=64, height=64, generator=gen)

    ours(), peer()  # warm-up: first-call allocations on both sides
    o, p = _rounds(lambda: _timed(ours, 5), lambda: _timed(peer, 5), rounds)
    return _summary("txt2img 2 steps 64x64, per call", o, p)


def bench_switch(mm: Any, keys: list[str], label: str) -> str:
    from modeldepot.services import Txt2Img

    cache = mm.load.cache
    cache.clear()
    Txt2Img.from_key(mm, keys[0])
    before = cache.stats().ram_bytes
    start = time.perf_counter()
    b = Txt2Img.from_key(mm, keys[1])
    seconds = time.perf_counter() - start
    loaded = cache.stats().ram_bytes - before
    unet = sum(p.numel() * p.element_size() for p in b.parts["unet"].parameters())
    unet += sum(x.numel() * x.element_size() for x in b.parts["unet"].buffers())
    total = sum(
        sum(t.numel() * t.element_size() for t in m.state_dict().values())
        for n, m in b.parts.items()
        if hasattr(m, "state_dict")
    )
    return (
        f"| switch A → B, {label} | weights loaded {loaded / 1e6:.2f} MB | unet {unet / 1e6:.2f} MB of "
        f"{total / 1e6:.2f} MB | loaded ÷ unet = {loaded / unet:.3f}; {seconds * 1000:.0f} ms |"
    )


def bench_lora(rounds: int) -> list[str]:
    """Apply + restore of one kohya LoRA (every attention projection of unet and text encoder)."""
    import logging

    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from modeldepot.services._lora import patched_loras
    from modeldepot.testing.factories import tiny_lora_for, write_diffusers_pipeline

    logging.getLogger("diffusers").setLevel(logging.ERROR)
    folder = write_diffusers_pipeline(ROOT / "models" / "sd1-lora-base", "sd-1")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    lora = tiny_lora_for(ROOT / "models" / "lora.safetensors", pipe.unet, pipe.text_encoder, rank=8, seed=1)
    cached = load_file(str(lora))  # what the model cache holds after the first use
    modules = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}

    def ours_cached() -> None:
        with patched_loras(modules, [("lora", cached, 1.0)]):
            pass

    def ours_file() -> None:
        with patched_loras(modules, [("lora", load_file(str(lora)), 1.0)]):
            pass

    def peer() -> None:
        pipe.load_lora_weights(str(lora), adapter_name="bench")
        pipe.unload_lora_weights()

    ours_cached(), ours_file(), peer()
    o1, p1 = _rounds(lambda: _timed(ours_cached, 5), lambda: _timed(peer, 5), rounds)
    o2, p2 = _rounds(lambda: _timed(ours_file, 5), lambda: _timed(peer, 5), rounds)
    layers = len({k.split(".")[0] for k in cached})
    return [
        _summary(f"LoRA apply+restore, {layers} layers, state dict cached", o1, p1),
        _summary(f"LoRA apply+restore, {layers} layers, file read each time", o2, p2),
    ]


def bench_compile(mm: Any, key: str, rounds: int) -> list[str]:
    """Denoising steps/s with and without torch.compile (after the compile), 64x64, 8 steps."""
    from modeldepot.services import Txt2Img

    eager, compiled = Txt2Img.from_key(mm, key), Txt2Img.from_key(mm, key, compile=True)
    start = time.perf_counter()
    compiled("x", steps=8, width=64, height=64, seed=1)
    compile_seconds = time.perf_counter() - start
    eager("x", steps=8, width=64, height=64, seed=1)

    def run(service: Any) -> Callable[[], float]:
        return lambda: _timed(lambda: service("x", steps=8, width=64, height=64, seed=1), 3) / 8

    c, e = _rounds(run(compiled), run(eager), rounds)
    ratios = [ee / cc for cc, ee in zip(c, e, strict=True)]
    return [
        f"| steps/s eager | {1 / statistics.median(e):.1f} | compiled | {1 / statistics.median(c):.1f} |",
        f"| compiled ÷ eager steps/s | {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) "
        f"| first compile | {compile_seconds:.0f} s |",
    ]


def setup() -> tuple[Any, dict[str, Any]]:
    from modeldepot import ModelManager
    from modeldepot.testing.factories import torch_models as F
    from modeldepot.testing.factories import write_sd_pipeline_family

    shutil.rmtree(ROOT, ignore_errors=True)
    a = F.tiny_sd_pipeline(ROOT / "models" / "tiny-a")
    family = [a, F.tiny_sd_variant(a, ROOT / "models" / "tiny-b", seed=50)]
    shaped = write_sd_pipeline_family(ROOT / "models" / "sd1-shaped", 2)  # real CLIP-L width
    mm = ModelManager.open(home=ROOT / "home")
    keys = [mm.install.register_path(p) for p in family]
    shaped_keys = [mm.install.register_path(p) for p in shaped]
    return mm, {"family": family, "keys": keys, "shaped_keys": shaped_keys}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    mm, ctx = setup()
    try:
        print("| case | ours | peer | ours ÷ peer, median (min-max) |")
        print("|---|---:|---:|---:|")
        print(bench_txt2img(mm, ctx["keys"][0], ctx["family"][0], args.rounds))
        print(bench_switch(mm, ctx["keys"], "tiny pair"))
        print(bench_switch(mm, ctx["shaped_keys"], "SD-1-shaped pair (CLIP-L 768 wide)"))
        for line in bench_lora(args.rounds):
            print(line)
        if args.compile:
            for line in bench_compile(mm, ctx["keys"][0], args.rounds):
                print(line)
    finally:
        mm.close()


if __name__ == "__main__":
    main()
