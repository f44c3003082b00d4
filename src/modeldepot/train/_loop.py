"""The LoRA training loop shared by ``train_lora`` and ``train_dreambooth_lora``.

PEFT injects the adapters (``inject_adapter_in_model``) into private copies of the parts being trained; the
loop is the standard denoising objective (diffusers' and kohya's trainers): encode the images with the
VAE, add noise at a random timestep, predict the noise (or the velocity, for v-prediction models), MSE.
Every random draw of step ``n`` comes from a generator seeded with (seed, n), and the data order from
(seed, epoch), so a run resumed from a checkpoint ends with the same weights as one never stopped.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from torch.nn import functional

from modeldepot.errors import TrainingError
from modeldepot.train._checkpoint import Checkpoint, save_checkpoint
from modeldepot.train._parts import BaseParts

#: kohya's default LoRA targets: the Linear / 1x1 layers of the UNet's transformer blocks, and the text
#: encoders' attention and MLP
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
_ENCODERS = ("text_encoder", "text_encoder_2")

Progress = Callable[[int, int, float], None]


@dataclass
class RunSettings:
    """What a run does. ``steps`` may grow on resume; the rest must match the checkpoint's run."""

    rank: int
    alpha: float
    lr: float
    text_encoder_lr: float
    batch_size: int
    seed: int
    text_encoder: bool
    steps: int
    checkpoint_every: int | None = None
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    prior_loss_weight: float = 1.0

    def resume_options(self, base_key: str, dataset_folder: str) -> dict[str, Any]:
        return {
            "base": base_key,
            "data": dataset_folder,
            "rank": self.rank,
            "alpha": self.alpha,
            "lr": self.lr,
            "text_encoder_lr": self.text_encoder_lr,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "text_encoder": self.text_encoder,
            "prior_loss_weight": self.prior_loss_weight,
        }


@dataclass
class Outcome:
    """What a finished run hands back: PEFT state dicts per trained part, the loss of every step run here."""

    adapters: dict[str, dict[str, torch.Tensor]]
    losses: list[float] = field(default_factory=list)
    first_step: int = 0
    epochs: int = 0


def resolve_precision(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``no`` / ``fp16`` / ``bf16`` / ``auto`` (fp16 on CUDA, none elsewhere)."""
    if mixed_precision == "auto":
        mixed_precision = "fp16" if device.type == "cuda" else "no"
    dtypes = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if mixed_precision not in dtypes:
        raise TrainingError(f"mixed_precision must be one of auto, no, fp16, bf16 (got {mixed_precision!r})")
    if mixed_precision == "fp16" and device.type != "cuda":
        raise TrainingError(f"fp16 mixed precision needs a CUDA device (this run is on {device.type}): use bf16 or no")
    return dtypes[mixed_precision]


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


class _Interrupt:
    """Ctrl-C during a run: the first one finishes the current step, saves a checkpoint and stops; a second
    one stops at once (Python's default). Only the main thread can install signal handlers."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class Trainer:
    """One run over ``parts``: adapters injected into copies of the trained parts, AdamW, the loop."""

    def __init__(self, parts: BaseParts, settings: RunSettings, run_dir: Path, options: Mapping[str, Any]) -> None:
        self.parts = parts
        self.settings = settings
        self.run_dir = run_dir
        self.options = dict(options)
        self.autocast = resolve_precision(settings.mixed_precision, parts.device)
        self.trained: dict[str, Any] = {"unet": parts.trainable_copy("unet")}
        if settings.text_encoder:
            for name in _ENCODERS:
                if name in parts.modules:
                    self.trained[name] = parts.trainable_copy(name)
        self._inject()
        self.encoders = {n: self.trained.get(n, parts.modules.get(n)) for n in _ENCODERS if n in parts.modules}
        groups = [{"params": self._params("unet"), "lr": settings.lr}]
        for name in _ENCODERS:
            if name in self.trained:
                groups.append({"params": self._params(name), "lr": settings.text_encoder_lr})
        self.optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=1e-2)
        from diffusers import DDPMScheduler

        # the training noise schedule of the model's own scheduler settings (betas, prediction type)
        ddpm: Any = DDPMScheduler
        self.noise_scheduler = ddpm.from_config(parts.modules["scheduler"].config)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast == torch.float16 else None
        # Asked once: diffusers' ``dtype`` walks every module (about 2 ms a call on the tiny test unet).
        self.unet_dtype = _frozen_dtype(self.trained["unet"])
        self.prediction_type = parts.prediction_type

    @property
    def targets(self) -> dict[str, tuple[str, ...]]:
        return {n: UNET_TARGETS if n == "unet" else TEXT_ENCODER_TARGETS for n in self.trained}

    def trainable_parameters(self) -> int:
        return sum(p.numel() for m in self.trained.values() for p in m.parameters() if p.requires_grad)

    def _inject(self) -> None:
        # PEFT initialises A with kaiming_uniform_ from the global RNG: fork it, so a run neither depends on
        # nor disturbs the caller's random state, and the same seed gives the same adapters.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            for name, module in self.trained.items():
                config = LoraConfig(
                    r=self.settings.rank,
                    lora_alpha=self.settings.alpha,  # type: ignore[arg-type]  # a float works (alpha / r)
                    target_modules=list(self.targets[name]),
                    init_lora_weights=True,
                )
                inject_adapter_in_model(config, module)
                for param in module.parameters():
                    if param.requires_grad:  # LoRA factors train in float32 whatever the frozen weights' dtype
                        param.data = param.data.float()
                module.to(self.parts.device)
                module.train()
                if self.settings.gradient_checkpointing:
                    if name == "unet":
                        module.enable_gradient_checkpointing()
                    else:
                        module.gradient_checkpointing_enable()

    def _params(self, name: str) -> list[torch.nn.Parameter]:
        return [p for p in self.trained[name].parameters() if p.requires_grad]

    def adapters(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: dict(get_peft_model_state_dict(module)) for name, module in self.trained.items()}

    def restore(self, checkpoint: Checkpoint) -> None:
        if set(checkpoint.adapters) != set(self.trained):
            raise TrainingError(
                f"the checkpoint {checkpoint.path} holds adapters for {', '.join(sorted(checkpoint.adapters))}; "
                f"this run trains {', '.join(sorted(self.trained))}"
            )
        for name, module in self.trained.items():
            result: Any = set_peft_model_state_dict(module, checkpoint.adapters[name])
            missing = [k for k in result.missing_keys if "lora_" in k]
            if result.unexpected_keys or missing:
                first = (result.unexpected_keys or missing)[0]
                raise TrainingError(f"the checkpoint {checkpoint.path} does not fit {name}'s adapters ({first})")
        self.optimizer.load_state_dict(checkpoint.optimizer)

    # -- the loop ------------------------------------------------------------------------------------

    def run(
        self,
        dataset: Any,
        *,
        start: int = 0,
        prior: Any = None,
        progress: Progress | None = None,
    ) -> Outcome:
        """Train from step ``start`` to ``settings.steps``; Ctrl-C saves a checkpoint and re-raises."""
        steps, bs = self.settings.steps, self.settings.batch_size
        per_epoch = max(dataset.steps_per_epoch(bs), 1)
        outcome = Outcome({}, first_step=start)
        done = start
        interrupt = _Interrupt()
        batches = _Batches(dataset, bs, per_epoch)
        priors = _Batches(prior, bs, max(prior.steps_per_epoch(bs), 1)) if prior is not None else None
        try:
            with interrupt.installed():
                for step in range(start, steps):
                    loss = self._step(step, batches.at(step), priors.at(step) if priors is not None else None)
                    done = step + 1
                    outcome.losses.append(loss)
                    if progress is not None:
                        progress(done, steps, loss)
                    if interrupt.requested:
                        raise KeyboardInterrupt
                    every = self.settings.checkpoint_every
                    if every and done % every == 0 and done < steps:
                        self.save(done)
        except KeyboardInterrupt as exc:
            path = self.save(done)
            exc.add_note(f"training stopped at step {done} of {steps}; checkpoint saved to {path}")
            exc.checkpoint = path  # type: ignore[attr-defined]
            raise
        outcome.adapters = self.adapters()
        outcome.epochs = -(-steps // per_epoch)
        return outcome

    def save(self, step: int) -> Path:
        return save_checkpoint(self.run_dir, step, self.options, self.adapters(), self.optimizer)

    def _step(self, step: int, batch: Any, prior_batch: Any) -> float:
        gen = _step_generator(self.settings.seed, step)
        loss = self._loss(batch, gen)
        if prior_batch is not None:
            loss = loss + self.settings.prior_loss_weight * self._loss(prior_batch, gen)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _loss(self, batch: Any, gen: torch.Generator) -> torch.Tensor:
        parts, unet = self.parts, self.trained["unet"]
        with torch.no_grad():
            latents = parts.latents(batch.pixel_values, gen)
        noise = torch.randn(latents.shape, generator=gen).to(latents)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen
        )
        timesteps = timesteps.to(parts.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        grad = torch.enable_grad() if len(self.trained) > 1 else torch.no_grad()
        with self._autocast(), grad:
            cond = parts.encode_prompts(list(batch.captions), self.encoders)
        kwargs: dict[str, Any] = {}
        if "text_embeds" in cond:
            h, w = batch.pixel_values.shape[-2:]
            ids = torch.tensor([h, w, 0, 0, h, w], dtype=torch.float32, device=parts.device)
            kwargs["added_cond_kwargs"] = {
                "text_embeds": cond["text_embeds"],
                "time_ids": ids.repeat(latents.shape[0], 1).to(cond["text_embeds"].dtype),
            }
        with self._autocast():
            hidden = cond["encoder_hidden_states"].to(self.unet_dtype)
            pred = unet(noisy.to(self.unet_dtype), timesteps, hidden, **kwargs).sample
        if self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        return functional.mse_loss(pred.float(), target.float())

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.parts.device.type, dtype=self.autocast)


def _frozen_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of a module's frozen weights (its LoRA factors are float32 whatever that is)."""
    return next((p.dtype for p in module.parameters() if not p.requires_grad), torch.float32)


class _Batches:
    """The batch of step ``n``: epoch ``n // per_epoch`` of the dataset's order, position ``n % per_epoch``.

    Reads forward through one epoch's iterator; a jump (a resumed run) starts that epoch's iterator over and
    skips to the position, so the batch of a step never depends on where the run started."""

    def __init__(self, dataset: Any, batch_size: int, per_epoch: int) -> None:
        self.dataset, self.batch_size, self.per_epoch = dataset, batch_size, per_epoch
        self._epoch, self._pos, self._it = -1, 0, iter(())

    def at(self, step: int) -> Any:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch or pos < self._pos:
            self._epoch, self._pos = epoch, 0
            self._it = iter(self.dataset.batches(self.batch_size, epoch=epoch))
        while self._pos < pos:
            next(self._it)
            self._pos += 1
        self._pos += 1
        return next(self._it)
