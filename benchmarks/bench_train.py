"""Training (issue 17): ``train_lora`` against a minimal hand-written PEFT loop over the same model, one run.

Run: python benchmarks/bench_train.py [--rounds 5] [--steps 40]

* steps/s: optimisation steps per second once training runs (from the first step's end to the last's),
  ``train_lora`` against the peer. The peer is the loop a user would write from diffusers' LoRA example,
  stripped to its core: the parts loaded with ``from_pretrained``, ``unet.add_adapter(LoraConfig(...))``
  with the same rank, alpha and target layers, AdamW, the images decoded to tensors and the captions
  tokenized once before the loop, then per step VAE encode, noise, text encoder, unet, MSE, backward,
  step. Ours does all of that plus what the peer skips: it decodes and crops each batch from disk,
  tokenizes per step, and draws every random number from a per-step generator (for exact resume).
  Target >= 0.9x (ours / peer; higher is better).
* end to end: the whole call (loading the parts, the run, writing the kohya file with its metadata and
  installing it) against the peer's whole script (loading, the run, ``save_file`` of the PEFT state dict).

Two models: the factories' tiny SD-1 pipeline with 4 captioned 32x32 images (the issue's test setup; a
step takes milliseconds, so per-step overhead shows in full), and a wider SD-1-shaped unet (block
channels 64/128/256, CLIP-L-width text encoder) with 4 images at 64x64.

Rounds interleave ours and the peer (order alternating); each figure is the median (min-max) of the
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

ROOT = Path("/tmp/modeldepot-bench-train")
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


def _wide_pipeline(dest: Path) -> Path:
    """The tiny pipeline with a wider unet (64/128/256 channels) and a 768-wide CLIP text encoder."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from modeldepot.testing.factories import torch_models as F

    F.tiny_sd_pipeline(dest)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(64, 128, 256),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    shutil.rmtree(dest / "unet")
    unet.save_pretrained(dest / "unet", safe_serialization=True)
    old = CLIPTextModel.from_pretrained(dest / "text_encoder")
    config = CLIPTextConfig(
        vocab_size=old.config.vocab_size,
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=old.config.bos_token_id,
        eos_token_id=old.config.eos_token_id,
        pad_token_id=old.config.pad_token_id,
    )
    shutil.rmtree(dest / "text_encoder")
    CLIPTextModel(config).save_pretrained(dest / "text_encoder", safe_serialization=True)
    return dest


class Peer:
    """The minimal hand-written PEFT loop."""

    def __init__(self, folder: Path, data: Path, resolution: int, rank: int, alpha: float) -> None:
        self.folder, self.data, self.resolution, self.rank, self.alpha = folder, data, resolution, rank, alpha

    def run(self, steps: int, out: Path) -> tuple[float, float]:
        """(seconds from the first step's end to the last's, seconds for the whole script)."""
        import numpy as np
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict
        from PIL import Image
        from safetensors.torch import save_file
        from transformers import CLIPTextModel, CLIPTokenizer

        start = time.perf_counter()
        unet = UNet2DConditionModel.from_pretrained(self.folder / "unet")
        vae = AutoencoderKL.from_pretrained(self.folder / "vae")
        text_encoder = CLIPTextModel.from_pretrained(self.folder / "text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(self.folder / "tokenizer")
        noise_scheduler = DDPMScheduler.from_pretrained(self.folder / "scheduler")
        for module in (unet, vae, text_encoder):
            module.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=TARGETS))
        unet.train()
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
        images = sorted(self.data.glob("*.png"))
        pixels = torch.stack(
            [
                torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((self.resolution,) * 2)))
                .permute(2, 0, 1)
                .float()
                / 127.5
                - 1
                for p in images
            ]
        )
        captions = [p.with_suffix(".txt").read_text() for p in images]
        ids = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt").input_ids
        first = last = 0.0
        for step in range(steps):
            i = step % len(images)
            with torch.no_grad():
                latents = vae.encode(pixels[i : i + 1]).latent_dist.sample() * vae.config.scaling_factor
                hidden = text_encoder(ids[i : i + 1])[0]
            noise = torch.randn_like(latents)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (1,))
            pred = unet(noise_scheduler.add_noise(latents, noise, t), t, hidden).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()  # what a progress bar showing the loss does
            last = time.perf_counter()
            if step == 0:
                first = last
        save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}, str(out))
        return last - first, time.perf_counter() - start


def _ours(mm: Any, key: str, data: Path, resolution: int, rank: int, alpha: float) -> Callable[[int, str], Any]:
    from modeldepot.train import train_lora

    def run(steps: int, name: str) -> tuple[float, float]:
        marks: list[float] = []
        start = time.perf_counter()
        train_lora(
            mm,
            base=key,
            data=data,
            steps=steps,
            rank=rank,
            alpha=alpha,
            resolution=resolution,
            output_name=name,
            progress=lambda *_: marks.append(time.perf_counter()),
        )
        return marks[-1] - marks[0], time.perf_counter() - start

    return run


def bench(label: str, folder: Path, resolution: int, rounds: int, steps: int) -> list[str]:
    from modeldepot import ModelManager
    from modeldepot.testing.factories import write_captioned_images

    data = write_captioned_images(ROOT / f"data-{label}", 4, size=resolution)
    rank, alpha = 4, 4.0
    with ModelManager.open(home=ROOT / f"home-{label}") as mm:
        key = mm.install.install_path(folder, {"name": label, "base": "sd-1"})
        ours = _ours(mm, key, data, resolution, rank, alpha)
        peer = Peer(folder, data, resolution, rank, alpha)
        ours(3, f"warm-{label}")  # imports, first allocations
        peer.run(3, ROOT / "warm.safetensors")
        o_steps, p_steps, o_all, p_all = [], [], [], []
        for i in range(rounds):
            runs = [lambda i=i: ours(steps, f"{label}-{i}"), lambda i=i: peer.run(steps, ROOT / f"peer-{i}.st")]
            if i % 2:
                runs.reverse()
            results = [r() for r in runs]
            (o, p) = results if i % 2 == 0 else results[::-1]
            o_steps.append((steps - 1) / o[0])
            p_steps.append((steps - 1) / p[0])
            o_all.append(o[1])
            p_all.append(p[1])
    rate = [o / p for o, p in zip(o_steps, p_steps, strict=True)]
    whole = [o / p for o, p in zip(o_all, p_all, strict=True)]
    return [
        f"| {label}: steps/s (higher is better) | {statistics.median(o_steps):.1f} | {statistics.median(p_steps):.1f}"
        f" | {statistics.median(rate):.3f} ({min(rate):.3f}-{max(rate):.3f}) |",
        f"| {label}: end to end, {steps} steps, s | {statistics.median(o_all):.2f} | {statistics.median(p_all):.2f}"
        f" | {statistics.median(whole):.3f} ({min(whole):.3f}-{max(whole):.3f}) |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--only", choices=("tiny", "wide"), default=None)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from modeldepot.testing.factories import torch_models as F

    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    tiny = F.tiny_sd_pipeline(ROOT / "tiny-sd")
    wide = _wide_pipeline(ROOT / "wide-sd")
    rows = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds of {args.steps} steps",
        "",
        "| measure | ours | peer | ours / peer |",
        "|---|---:|---:|---:|",
    ]
    if args.only in (None, "tiny"):
        rows += bench("tiny", tiny, 32, args.rounds, args.steps)
    if args.only in (None, "wide"):
        rows += bench("wide", wide, 64, args.rounds, args.steps)
    print("\n".join(rows))
    shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
