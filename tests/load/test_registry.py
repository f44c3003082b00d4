"""Loader registry and the public surface of modeldepot.load (no torch needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import modeldepot.load as load
from modeldepot.errors import LoaderNotFoundError
from modeldepot.load import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType


def test_all_exports_exist() -> None:
    for name in load.__all__:
        assert hasattr(load, name), name


def test_import_does_not_import_torch() -> None:
    code = (
        "import sys, modeldepot.load, modeldepot.load.loaders; "
        "from modeldepot.load import ModelLoaderRegistry; assert ModelLoaderRegistry.registered(); "
        "bad = [m for m in ('torch', 'diffusers', 'transformers', 'safetensors.torch') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_register_several_triples_and_wildcard(mkcfg: Any, tmp_path: Path) -> None:
    reg = ModelLoaderRegistry()

    @reg.register(base=BaseModelType.Any, type=ModelType.VAE, format=ModelFormat.Diffusers)
    @reg.register(base=BaseModelType.Any, type=ModelType.VAE, format=ModelFormat.Checkpoint)
    class AnyVAE(ModelLoader):
        pass

    @reg.register(base=BaseModelType.StableDiffusionXL, type=ModelType.VAE, format=ModelFormat.Diffusers)
    class XLVAE(ModelLoader):
        pass

    sd1 = mkcfg(tmp_path, type="vae", format="diffusers", base="sd-1")
    xl = mkcfg(tmp_path, type="vae", format="diffusers", base="sdxl")
    ck = mkcfg(tmp_path, type="vae", format="checkpoint", base="sdxl")
    assert reg.get_implementation(sd1)[0] is AnyVAE
    assert reg.get_implementation(xl)[0] is XLVAE  # exact base wins over the wildcard
    assert reg.get_implementation(ck)[0] is AnyVAE
    assert len(reg.registered()) == 3


def test_duplicate_registration_raises() -> None:
    reg = ModelLoaderRegistry()
    reg.register(base="any", type="lora", format="lycoris")(ModelLoader)
    with pytest.raises(ValueError, match="already registered"):

        @reg.register(base="any", type="lora", format="lycoris")
        class Again(ModelLoader):
            pass


def test_unknown_triple_lists_registered(mkcfg: Any, tmp_path: Path) -> None:
    reg = ModelLoaderRegistry()
    reg.register(base="any", type="lora", format="lycoris")(ModelLoader)
    cfg = mkcfg(tmp_path, type="vae", format="diffusers", base="sd-2", name="myvae")
    with pytest.raises(LoaderNotFoundError) as info:
        reg.get_implementation(cfg)
    msg = str(info.value)
    assert "no loader for base=sd-2, type=vae, format=diffusers" in msg and "'myvae'" in msg
    assert "any/lora/lycoris" in msg
    assert isinstance(info.value, LookupError)


def test_default_registry_has_builtin_loaders(mkcfg: Any, tmp_path: Path) -> None:
    import modeldepot.load.loaders  # noqa: F401

    triples = {(b.value, t.value, f.value) for b, t, f in ModelLoaderRegistry.registered()}
    for needed in [
        ("any", "main", "diffusers"),
        ("sd-1", "main", "checkpoint"),
        ("sd-2", "main", "checkpoint"),
        ("sdxl", "main", "checkpoint"),
        ("any", "vae", "diffusers"),
        ("any", "vae", "checkpoint"),
        ("any", "controlnet", "diffusers"),
        ("any", "t2i_adapter", "diffusers"),
        ("any", "ip_adapter", "invokeai"),
        ("any", "lora", "lycoris"),
        ("any", "embedding", "embedding_file"),
        ("any", "clip_embed", "diffusers"),
        ("any", "t5_encoder", "t5_encoder"),
        ("any", "spandrel_image_to_image", "checkpoint"),
        ("sd-3", "main", "checkpoint"),
        ("flux", "main", "checkpoint"),
    ]:
        assert needed in triples, needed
    unknown = mkcfg(tmp_path, type="main", format="checkpoint", base="unknown")
    with pytest.raises(LoaderNotFoundError, match="base=unknown"):
        ModelLoaderRegistry.get_implementation(unknown)
