"""Tiny Hugging Face model folders for the Nataili-style managers: a BLIP captioner, a full CLIP
model (both towers) and Stable Diffusion's safety checker.

Each folder has the file names of its real repository (``config.json``, ``model.safetensors``,
``preprocessor_config.json``, tokenizer files), written in the classic layout those repositories
use. The weights come from the library's own ``save_pretrained`` of a seeded random-init model of
hidden width 32, one layer per tower and 32-pixel images, so every folder loads exactly and runs.
Unlike the rest of the factories these writers need torch and transformers (imported on call).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from modeldepot.testing.factories._folders import write_tokenizer
from modeldepot.testing.factories._tiny import CLIP_VOCAB
from modeldepot.testing.factories._writers import write_json, write_text

IMAGE_SIZE = 32
_WIDTH = 32
_PROJECTION = 16
#: OpenAI CLIP's normalisation, which BLIP and the safety checker also use.
_MEAN = [0.48145466, 0.4578275, 0.40821073]
_STD = [0.26862954, 0.26130258, 0.27577711]
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = ["a", "an", "the", "photo", "picture", "of", "cat", "dog", "red", "with", "on", "in"]
_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def _lib(name: str) -> Any:
    """transformers / diffusers / torch as ``Any``: untyped for mypy, and heavy to import."""
    return importlib.import_module(name)


def _tower(**extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": _WIDTH,
        "intermediate_size": 2 * _WIDTH,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        **extra,
    }


def _vision_tower() -> dict[str, Any]:
    return _tower(image_size=IMAGE_SIZE, patch_size=8)


def _save(model: Any, root: Path) -> None:
    """The library's own writer: ``config.json`` and ``model.safetensors`` as it names them."""
    model.eval().save_pretrained(str(root), safe_serialization=True)


def bert_vocab() -> list[str]:
    """A tiny WordPiece vocabulary (BERT's specials first, BLIP's ``[DEC]`` / ``[ENC]`` last):
    whole words, letters and digits, and each as a ``##`` continuation, so any lower-case text
    tokenizes without ``[UNK]``."""
    vocab = [*_BERT_SPECIALS, *_WORDS]
    vocab += [c for c in _LETTERS if c not in vocab]
    vocab += [f"##{c}" for c in _LETTERS]
    return [*vocab, "[DEC]", "[ENC]"]


def _write_bert_tokenizer(root: Path) -> list[str]:
    vocab = bert_vocab()
    write_text(root / "vocab.txt", "\n".join(vocab) + "\n")
    specials = {
        "bos_token": "[DEC]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    write_json(root / "special_tokens_map.json", {**specials, "additional_special_tokens": ["[ENC]"]})
    write_json(
        root / "tokenizer_config.json",
        {
            **specials,
            "additional_special_tokens": ["[ENC]"],
            "do_lower_case": True,
            "model_max_length": 512,
            "processor_class": "BlipProcessor",
            "tokenizer_class": "BertTokenizer",
        },
    )
    return vocab


def write_blip_folder(root: str | Path, *, seed: int = 0) -> Path:
    """A tiny ``BlipForConditionalGeneration`` captioner with its ``BlipProcessor`` files (a BERT
    WordPiece tokenizer and a ``BlipImageProcessor`` for 32-pixel images), as
    Salesforce/blip-image-captioning-* lay them out."""
    root = Path(root)
    transformers, torch = _lib("transformers"), _lib("torch")
    vocab = _write_bert_tokenizer(root)
    sep = vocab.index("[SEP]")
    text = _tower(
        vocab_size=len(vocab),
        max_position_embeddings=64,
        projection_dim=_PROJECTION,
        bos_token_id=vocab.index("[DEC]"),
        eos_token_id=sep,
        sep_token_id=sep,
        pad_token_id=vocab.index("[PAD]"),
    )
    config = transformers.BlipConfig(
        text_config=text,
        vision_config={**_vision_tower(), "projection_dim": _PROJECTION},
        projection_dim=_PROJECTION,
        image_text_hidden_size=_PROJECTION,
    )
    torch.manual_seed(seed)
    _save(transformers.BlipForConditionalGeneration(config), root)
    write_json(
        root / "preprocessor_config.json",
        {
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": _MEAN,
            "image_processor_type": "BlipImageProcessor",
            "image_std": _STD,
            "processor_class": "BlipProcessor",
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        },
    )
    return root


def _clip_config(vocab_size: int) -> Any:
    text = _tower(
        vocab_size=vocab_size,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return _lib("transformers").CLIPConfig(text_config=text, vision_config=_vision_tower(), projection_dim=_PROJECTION)


def write_clip_model_folder(root: str | Path, *, seed: int = 0) -> Path:
    """A tiny full ``CLIPModel`` (text and vision towers, projections, logit scale) with its
    ``CLIPProcessor`` files: the byte-level CLIP tokenizer and a ``CLIPImageProcessor`` for
    32-pixel images, as openai/clip-vit-* lay them out."""
    root = Path(root)
    transformers, torch = _lib("transformers"), _lib("torch")
    write_tokenizer(root)
    torch.manual_seed(seed)
    _save(transformers.CLIPModel(_clip_config(CLIP_VOCAB)), root)
    write_json(
        root / "preprocessor_config.json",
        {
            "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": _MEAN,
            "image_processor_type": "CLIPImageProcessor",
            "image_std": _STD,
            "processor_class": "CLIPProcessor",
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"shortest_edge": IMAGE_SIZE},
        },
    )
    return root


def write_safety_checker_folder(root: str | Path, *, seed: int = 0) -> Path:
    """A tiny ``StableDiffusionSafetyChecker`` (a CLIP image tower, its projection and the concept
    embeddings) with the ``CLIPFeatureExtractor`` config of CompVis/stable-diffusion-safety-checker."""
    root = Path(root)
    torch = _lib("torch")
    checker_cls = _lib("diffusers.pipelines.stable_diffusion.safety_checker").StableDiffusionSafetyChecker
    torch.manual_seed(seed)
    checker = checker_cls(_clip_config(64))
    with torch.no_grad():
        # The library initialises every concept to ones (all alike); real checkers hold distinct ones.
        checker.concept_embeds.copy_(torch.randn_like(checker.concept_embeds))
        checker.special_care_embeds.copy_(torch.randn_like(checker.special_care_embeds))
    _save(checker, root)
    write_json(
        root / "preprocessor_config.json",
        {
            "crop_size": IMAGE_SIZE,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": _MEAN,
            "image_std": _STD,
            "resample": 3,
            "size": IMAGE_SIZE,
        },
    )
    return root


__all__ = ["IMAGE_SIZE", "bert_vocab", "write_blip_folder", "write_clip_model_folder", "write_safety_checker_folder"]
