"""``Txt2Img``, ``Img2Img``, ``Inpaint``, ``Depth2Img``: Stable Diffusion (1/2/XL, 3, FLUX) over the cache's parts.

A service holds the model's parts as the cache holds them (the unet, text encoders, tokenizers, VAE and
scheduler of a checkpoint that shares its VAE with another are one module in memory). Each call may add
LoRA/LyCORIS weights (patched into the cached modules and restored bit for bit afterwards), textual-inversion
embeddings (on copies of the tokenizers and a temporary embedding table), another VAE, and a scheduler by
name; while it runs, every cache entry it uses is locked.

``compile=True`` runs the unet through ``torch.compile`` (the stand-in for document 001's AITemplate);
the compiled wrapper is kept per unet and recompiles once per new image shape, as torch.compile does.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypedDict, Unpack

from modeldepot.errors import InvalidImageError, ServiceInputError, WrongModelTypeError
from modeldepot.services._embeddings import textual_inversions
from modeldepot.services._images import check_image
from modeldepot.services._lora import COMPONENTS, locked, patched_loras
from modeldepot.services._parameters import GenerationParameters
from modeldepot.services._pipelines import build_pipeline, pipeline_class
from modeldepot.services._schedulers import make_scheduler
from modeldepot.services.base import BoundModel, Service
from modeldepot.taxonomy import ModelType

if TYPE_CHECKING:
    from PIL import Image

    from modeldepot.configs import ModelConfigBase
    from modeldepot.load import LoadedModel
    from modeldepot.manager import ModelManager

#: parts a generation never needs (left out of from_key's loads)
_SKIP_PARTS = frozenset({"safety_checker", "feature_extractor", "image_encoder"})
_TEXT_PAIRS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
_COMPILED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
#: progress(step, total) after every denoising step
Progress = Callable[[int, int], None]


class GenerationOptions(TypedDict, total=False):
    """Keyword options of every generation call.

    ``negative_prompt`` (""), ``steps`` (30), ``guidance`` (7.5), ``seed`` (None: a random one, reported
    in the parameters), ``loras`` ([(key or LoadedModel, weight)]), ``embeddings`` ([key or LoadedModel];
    the trigger word is the record's name), ``vae`` (key or LoadedModel), ``scheduler`` (a name from
    ``SCHEDULER_NAMES``; None: the model's own), ``num_images`` (1), ``progress`` (``f(step, total)``).
    """

    negative_prompt: str
    steps: int
    guidance: float
    seed: int | None
    loras: Sequence[tuple[Any, float]]
    embeddings: Sequence[Any]
    vae: Any
    scheduler: str | None
    num_images: int
    progress: Progress | None


def _parts_of(model: Any) -> tuple[dict[str, Any], ModelConfigBase | None]:
    """The parts of what a service was given: a ManagedModel, a mapping of parts, or a diffusers pipeline."""
    from modeldepot.load import LoadedModel
    from modeldepot.managers import ManagedModel

    if isinstance(model, BoundModel) and isinstance(model.model, Mapping):
        loaded = {e.submodel_type.value: e for e in model.entries if e.submodel_type is not None}
        return {**dict(model.model), **loaded}, model.config
    if isinstance(model, ManagedModel):
        parts = model.extras.get("parts") or model.parts
        return dict(parts), model.record
    if isinstance(model, Mapping):
        return dict(model), None
    components = getattr(model, "components", None)
    if isinstance(components, Mapping):
        return {k: v for k, v in components.items() if v is not None}, None
    if isinstance(model, LoadedModel):
        raise WrongModelTypeError(
            f"a generation needs all the parts of a main model, not one ({model!r}): "
            "use Txt2Img.from_key(depot, key) or pass {submodel: loaded}",
            key=model.config.key,
        )
    raise WrongModelTypeError(f"cannot generate with a {type(model).__name__}: give a main model's parts")


def _compiled(unet: Any) -> Any:
    import torch

    found = _COMPILED.get(unet)
    if found is None:
        found = _COMPILED[unet] = torch.compile(unet, dynamic=False)
    return found


class _Generation(Service):
    """What the four generation services share: parts, per-call patches, a fresh pipeline per call."""

    model_types: ClassVar[tuple[ModelType, ...]] = (ModelType.Main,)
    task: ClassVar[str] = "txt2img"

    def __init__(self, model: Any, *, depot: ModelManager | None = None, compile: bool = False) -> None:
        from modeldepot.load import LoadedModel

        parts, config = _parts_of(model)
        if config is not None:
            self.check_config(config)
        entries = tuple(p for p in parts.values() if isinstance(p, LoadedModel))
        modules = {name: p.model if isinstance(p, LoadedModel) else p for name, p in parts.items()}
        self.bound = BoundModel(modules, config, entries)
        self.depot = depot
        self.compile = compile
        base = config.base.value if config is not None else None
        self.pipeline_class = pipeline_class(self.task, modules, base, self.bound.label)

    @property
    def parts(self) -> dict[str, Any]:
        """The modules the service runs: ``{"unet": ..., "vae": ..., ...}`` (the cache's own objects)."""
        modules: dict[str, Any] = self.bound.model
        return modules

    @classmethod
    def from_key(cls, depot: ModelManager, key: str, **options: Any) -> Self:
        """Load every part of the main model ``key`` through the depot's cache and build the service."""
        config = depot.store.resolve(key)
        cls.check_config(config)
        names = depot.load.submodels(config) or []
        parts = [depot.load_model_by_config(config, n) for n in names if n not in _SKIP_PARTS]
        bound = BoundModel({}, config, tuple(parts))
        return cls(bound, depot=options.pop("depot", depot), **options)

    # -- per-call extras ------------------------------------------------------------------------

    def _extra(self, key: Any, wanted: ModelType, what: str) -> tuple[ModelConfigBase | None, LoadedModel | Any]:
        """A LoRA / embedding / VAE named by key (through the depot) or given loaded."""
        from modeldepot.load import LoadedModel

        if isinstance(key, LoadedModel):
            config, loaded = key.config, key
        elif isinstance(key, str):
            if self.depot is None:
                raise ServiceInputError(f"{what} {key!r} is a key: build the service with depot= (or from_key)")
            config = self.depot.store.resolve(key)
            loaded = None
        else:
            return None, key
        if config.type != wanted:
            raise WrongModelTypeError(
                f"{what} {config.name!r} is a {config.type.value} model, not a {wanted.value}",
                key=config.key,
                expected=(wanted.value,),
            )
        mine = self.bound.config
        vague = {"any", "unknown"}  # a base identification could not tell: nothing to check against
        if (
            mine is not None
            and config.base != mine.base
            and not {config.base.value, mine.base.value} & vague
            and mine.base not in (getattr(config, "compatible_bases", None) or ())
        ):
            raise WrongModelTypeError(
                f"{what} {config.name!r} is for {config.base.value} models; {mine.name!r} is {mine.base.value}",
                key=config.key,
                expected=(mine.base.value,),
            )
        if loaded is None:
            assert self.depot is not None
            loaded = self.depot.load_model_by_config(config)
        return config, loaded

    # -- the call ---------------------------------------------------------------------------------

    def _run(
        self, prompt: str, size: tuple[int | None, int | None], task_kwargs: dict[str, Any], options: GenerationOptions
    ) -> list[Image.Image]:
        unknown = sorted(set(options) - set(GenerationOptions.__annotations__))
        if unknown:
            raise ServiceInputError(f"{type(self).__name__} got unexpected options: {', '.join(unknown)}")
        params = self._params(
            prompt,
            options.get("negative_prompt", ""),
            options.get("steps", 30),
            options.get("guidance", 7.5),
            options.get("seed"),
        )
        params.width, params.height = self._size(*size)
        params.strength = task_kwargs.get("strength")
        if self.task in ("txt2img", "inpaint"):  # the others take the size from the image
            task_kwargs = {**task_kwargs, "width": params.width, "height": params.height}
        return self._generate(params, task_kwargs, options)

    def _generate(
        self, params: GenerationParameters, task_kwargs: dict[str, Any], options: GenerationOptions
    ) -> list[Image.Image]:
        import torch

        num_images = options.get("num_images", 1)
        if not isinstance(num_images, int) or num_images < 1:
            raise ServiceInputError(f"num_images must be at least 1, not {num_images}")
        modules = dict(self.parts)
        with ExitStack() as stack:
            stack.enter_context(self.bound.running())
            # One generation at a time per set of cached modules: another call's LoRA must never be
            # patched into a unet this call is running.
            stack.enter_context(locked([modules[n] for n in COMPONENTS if n in modules]))
            self._add_extras(stack, modules, params, options)
            modules["scheduler"], params.sampler = make_scheduler(options.get("scheduler"), modules["scheduler"])
            if self.compile and "unet" in modules:
                modules["unet"] = _compiled(modules["unet"])
            pipe = build_pipeline(self.pipeline_class, modules)
            call: dict[str, Any] = {
                "prompt": params.prompt,
                "negative_prompt": params.negative_prompt or None,
                "num_inference_steps": params.steps,
                "guidance_scale": params.guidance,
                "generator": torch.Generator(device="cpu").manual_seed(params.seed),
                "num_images_per_prompt": num_images,
                "output_type": "pil",
                **task_kwargs,
            }
            progress = options.get("progress")
            if progress is not None:
                call["callback_on_step_end"] = _progress_callback(progress)
            try:
                with torch.inference_mode():
                    images: list[Image.Image] = pipe(**call).images
            except ValueError as exc:  # diffusers' check_inputs: sizes, strength, prompt types
                raise ServiceInputError(f"{type(self).__name__}: {exc}") from exc
        text = params.to_text()
        for image in images:
            image.info["parameters"] = text
        return images

    def _add_extras(
        self, stack: ExitStack, modules: dict[str, Any], params: GenerationParameters, options: GenerationOptions
    ) -> None:
        """Swap in the call's VAE, patch its LoRAs, teach its embeddings; all undone when ``stack`` closes."""
        from modeldepot.load import LoadedModel

        def use(loaded: Any) -> Any:
            return stack.enter_context(loaded) if isinstance(loaded, LoadedModel) else loaded

        vae = options.get("vae")
        if vae is not None:
            vae_config, vae_loaded = self._extra(vae, ModelType.VAE, "vae")
            modules["vae"] = use(vae_loaded)
            params.vae = vae_config.name if vae_config is not None else type(modules["vae"]).__name__
        patches: list[tuple[str, Any, float]] = []
        for key, weight in options.get("loras", ()):
            config, loaded = self._extra(key, ModelType.LoRA, "LoRA")
            label = config.name if config is not None else f"lora{len(patches)}"
            patches.append((label, use(loaded), float(weight)))
            params.loras.append((label, float(weight), config.hash if config is not None else None))
        if patches:
            stack.enter_context(patched_loras({n: modules[n] for n in COMPONENTS if n in modules}, patches))
        triggers: list[tuple[str, Any]] = []
        for key in options.get("embeddings", ()):
            config, loaded = self._extra(key, ModelType.TextualInversion, "embedding")
            trigger = config.name if config is not None else f"embedding{len(triggers)}"
            triggers.append((trigger, use(loaded)))
            params.embeddings.append((trigger, config.hash if config is not None else None))
        if triggers:
            pairs = [(modules[t], modules[e]) for t, e in _TEXT_PAIRS if t in modules and e in modules]
            tokenizers = stack.enter_context(textual_inversions(pairs, triggers))
            for (name, _), tokenizer in zip(_TEXT_PAIRS, tokenizers, strict=False):
                modules[name] = tokenizer

    def _params(
        self, prompt: str, negative_prompt: str, steps: int, guidance: float, seed: int | None
    ) -> GenerationParameters:
        if not isinstance(prompt, str):
            raise ServiceInputError(f"prompt must be a string, not {type(prompt).__name__}")
        if not isinstance(steps, int) or steps < 1:
            raise ServiceInputError(f"steps must be a positive integer, not {steps!r}")
        if guidance < 0:
            raise ServiceInputError(f"guidance must be >= 0, not {guidance}")
        if seed is None:
            seed = random.randrange(2**32)  # reported in the parameters so the image can be remade
        elif not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ServiceInputError(f"seed must be an integer in [0, 2**64), not {seed!r}")
        config = self.bound.config
        return GenerationParameters(
            prompt=prompt,
            negative_prompt=negative_prompt,
            steps=steps,
            guidance=float(guidance),
            seed=seed,
            model=config.name if config is not None else None,
            model_hash=config.hash if config is not None else None,
        )

    def _size(self, width: int | None, height: int | None) -> tuple[int, int]:
        """The output size: the model's native size by default; sides must fit the latent grid."""
        vae, denoiser = self.parts.get("vae"), self.parts.get("unet") or self.parts.get("transformer")
        factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8
        native = int(getattr(getattr(denoiser, "config", None), "sample_size", 64) or 64) * factor
        w, h = width or native, height or native
        for side, value in (("width", w), ("height", h)):
            if not isinstance(value, int) or value < factor or value % factor:
                raise ServiceInputError(f"{side} must be a positive multiple of {factor} px, not {value!r}")
        return w, h


def _progress_callback(progress: Progress) -> Callable[..., dict[str, Any]]:
    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        progress(step + 1, int(getattr(pipe, "num_timesteps", 0) or 0))
        return tensors

    return on_step_end


def _mask(mask: Any, size: tuple[int, int]) -> Image.Image:
    from PIL import Image

    if not isinstance(mask, Image.Image):
        raise InvalidImageError(f"mask must be a PIL image, not {type(mask).__name__}")
    if mask.size != size:
        raise InvalidImageError(
            f"mask is {mask.size[0]}x{mask.size[1]} px but the image is {size[0]}x{size[1]}: they must match"
        )
    return mask.convert("L")


def _strength(strength: float) -> float:
    if not 0 < strength <= 1:
        raise ServiceInputError(f"strength must be in (0, 1], not {strength}")
    return float(strength)


class Txt2Img(_Generation):
    """Text to image: ``Txt2Img.from_key(depot, key)(prompt, steps=, width=, height=, seed=)``."""

    task = "txt2img"

    def __call__(
        self, prompt: str, *, width: int | None = None, height: int | None = None, **options: Unpack[GenerationOptions]
    ) -> Image.Image:
        return self.generate(prompt, width=width, height=height, **options)[0]

    def generate(
        self, prompt: str, *, width: int | None = None, height: int | None = None, **options: Unpack[GenerationOptions]
    ) -> list[Image.Image]:
        """``num_images`` images for ``prompt`` (the model's native size by default); each carries its
        A1111 ``parameters`` text in ``.info``."""
        return self._run(prompt, (width, height), {}, options)


class Img2Img(_Generation):
    """Image to image: ``Img2Img.from_key(depot, key)(prompt, image, strength=0.75)``."""

    task = "img2img"

    def __call__(
        self, prompt: str, image: Any, *, strength: float = 0.75, **options: Unpack[GenerationOptions]
    ) -> Image.Image:
        return self.generate(prompt, image, strength=strength, **options)[0]

    def generate(
        self, prompt: str, image: Any, *, strength: float = 0.75, **options: Unpack[GenerationOptions]
    ) -> list[Image.Image]:
        picture = check_image(image)
        kwargs = {"image": picture, "strength": _strength(strength)}
        return self._run(prompt, picture.size, kwargs, options)


class Inpaint(_Generation):
    """Inpainting: white pixels of ``mask`` are repainted. Inpainting models (9-channel unets) and normal
    ones (diffusers blends the latents) both work."""

    task = "inpaint"

    def __call__(
        self, prompt: str, image: Any, mask: Any, *, strength: float = 1.0, **options: Unpack[GenerationOptions]
    ) -> Image.Image:
        return self.generate(prompt, image, mask, strength=strength, **options)[0]

    def generate(
        self, prompt: str, image: Any, mask: Any, *, strength: float = 1.0, **options: Unpack[GenerationOptions]
    ) -> list[Image.Image]:
        picture = check_image(image)
        kwargs = {"image": picture, "mask_image": _mask(mask, picture.size), "strength": _strength(strength)}
        return self._run(prompt, picture.size, kwargs, options)


class Depth2Img(_Generation):
    """Depth-conditioned image to image (SD-2 depth models). ``depth_map`` is a grayscale PIL image (near =
    bright) or a ``[1, H, W]`` tensor; no depth estimator is bundled, so it is required."""

    task = "depth2img"

    def __call__(
        self,
        prompt: str,
        image: Any,
        depth_map: Any = None,
        *,
        strength: float = 0.8,
        **options: Unpack[GenerationOptions],
    ) -> Image.Image:
        return self.generate(prompt, image, depth_map, strength=strength, **options)[0]

    def generate(
        self,
        prompt: str,
        image: Any,
        depth_map: Any = None,
        *,
        strength: float = 0.8,
        **options: Unpack[GenerationOptions],
    ) -> list[Image.Image]:
        picture = check_image(image)
        kwargs = {"image": picture, "depth_map": _depth(depth_map, picture.size), "strength": _strength(strength)}
        return self._run(prompt, picture.size, kwargs, options)


def _depth(depth_map: Any, size: tuple[int, int]) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    if depth_map is None:
        raise ServiceInputError(
            "Depth2Img needs depth_map=: no depth estimator is bundled (give a grayscale image, near = bright)"
        )
    if isinstance(depth_map, Image.Image):
        if depth_map.size != size:
            raise InvalidImageError(
                f"depth map is {depth_map.size[0]}x{depth_map.size[1]} px but the image is {size[0]}x{size[1]}"
            )
        array = np.asarray(depth_map.convert("L"), dtype=np.float32) / 255.0
        depth = torch.from_numpy(array.copy()).unsqueeze(0)
    elif isinstance(depth_map, torch.Tensor):
        if depth_map.dim() != 3 or tuple(depth_map.shape[1:]) != (size[1], size[0]):
            raise InvalidImageError(f"depth map tensor must be [1, {size[1]}, {size[0]}], not {list(depth_map.shape)}")
        depth = depth_map.float()
    else:
        raise InvalidImageError(f"depth_map must be a PIL image or a tensor, not {type(depth_map).__name__}")
    if bool((depth.max() - depth.min()) <= 0):
        # diffusers rescales the map by its range: a flat one would turn the whole picture into NaN
        raise InvalidImageError("depth map is flat (every pixel the same depth): it needs some relief")
    return depth


__all__ = ["Depth2Img", "Img2Img", "Inpaint", "Txt2Img"]
