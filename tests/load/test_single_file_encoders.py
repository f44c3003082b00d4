"""Single-file CLIP text / CLIP vision / T5 encoders and SDXL-refiner checkpoints (ComfyUI-style files).

Each tiny file is identified, turned into a record the way ``register_path`` does, loaded through
the service and compared with the same weights loaded the reference transformers/diffusers way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from modeldepot.config import DepotConfig  # noqa: E402
from modeldepot.configs import parse_config  # noqa: E402
from modeldepot.identify import identify, record_fields  # noqa: E402
from modeldepot.load import InvalidSubmodelError, ModelCache, ModelLoadError, ModelLoadService  # noqa: E402
from modeldepot.load.loaders import single_file_encoders as sfe  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402

pytestmark = pytest.mark.torch
ATOL = 1e-5


@pytest.fixture
def svc(depot_config: DepotConfig) -> ModelLoadService:
    return ModelLoadService(depot_config, cache=ModelCache(ram_budget_bytes=1 << 30))


def _record(path: Path, expect: tuple[str, str, str], **extra: Any) -> Any:
    """identify -> record_fields -> parse_config, as register_path does (checks type/format/base)."""
    ident = identify(path)
    assert (ident.type.value, ident.format.value, ident.base.value) == expect, ident.reasons
    fields = record_fields(ident)
    fields.update(name=path.stem, path=str(path), **extra)
    return parse_config(fields)


def _file_sd(path: Path, prefix: str = "") -> dict[str, Any]:
    from safetensors.torch import load_file

    return {k.removeprefix(prefix): v.float() for k, v in load_file(str(path)).items()}


def _spy_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the tensors the encoder loaders read from disk."""
    names: list[str] = []
    real = sfe.load_safetensors

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = real(*args, **kwargs)
        names.extend(out)
        return out

    monkeypatch.setattr(sfe, "load_safetensors", spy)
    return names


# ----- CLIP text ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variant", "prefix", "cls_name"),
    [("large", "", "CLIPTextModel"), ("gigantic", "transformer.", "CLIPTextModelWithProjection")],
)
def test_clip_text_single_file_matches_reference(
    svc: ModelLoadService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variant: str,
    prefix: str,
    cls_name: str,
) -> None:
    dtype = torch.float32 if variant == "large" else torch.float16  # clip_g ships in fp16
    path = F.tiny_clip_text_single_file(
        tmp_path / f"clip_{variant[0]}.safetensors", variant, prefix=prefix, dtype=dtype
    )
    cfg = _record(path, ("clip_embed", "checkpoint", "any"))
    assert cfg.clip_variant.value == variant
    reads = _spy_reads(monkeypatch)
    te = svc.load_model(cfg).model
    assert type(te).__name__ == cls_name and te.dtype == torch.float32
    # CLIP-L is used without its projection: that tensor is never read.
    assert ("text_projection.weight" in reads) == (variant != "large") and reads

    cls = getattr(transformers, cls_name)
    ref = cls(transformers.CLIPTextConfig(**F.TINY_CLIP_TEXT_CONFIGS[variant])).eval()
    sd = _file_sd(path, prefix)
    if not hasattr(ref, "text_model"):  # transformers >= 5.6 flattens CLIPTextModel
        sd = {k.removeprefix("text_model."): v for k, v in sd.items() if k != "text_projection.weight"}
    ref.load_state_dict(sd, strict=True)
    ids = torch.tensor([[0, 65, 66, 67, 2, 1, 1]])
    with torch.no_grad():
        got, want = te(ids), ref(ids)
    assert torch.allclose(got.last_hidden_state, want.last_hidden_state, atol=ATOL)
    pooled = "pooler_output" if variant == "large" else "text_embeds"
    assert torch.allclose(getattr(got, pooled), getattr(want, pooled), atol=ATOL)
    assert te.config.num_attention_heads == ref.config.num_attention_heads  # 64-wide heads, not in any shape
    assert te.config.hidden_act == ref.config.hidden_act


def test_clip_text_tokenizer_from_shipped_bpe(svc: ModelLoadService, tmp_path: Path) -> None:
    cfg_l = _record(F.tiny_clip_l_single_file(tmp_path / "clip_l.safetensors"), ("clip_embed", "checkpoint", "any"))
    tok = svc.load_model(cfg_l, "tokenizer").model
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.pad_token == "<|endoftext|>" and tok.model_max_length == 77
    cfg_g = _record(F.tiny_clip_g_single_file(tmp_path / "clip_g.safetensors"), ("clip_embed", "checkpoint", "any"))
    assert svc.load_model(cfg_g, "tokenizer_2").model.pad_token == "!"  # OpenCLIP pads with "!"
    with pytest.raises(InvalidSubmodelError, match="no submodel 'vae'"):
        svc.load_model(cfg_l, "vae")


def test_clip_text_honours_precision(home: Path, tmp_path: Path) -> None:
    svc = ModelLoadService(DepotConfig(home=home, precision="bfloat16"))
    cfg = _record(F.tiny_clip_l_single_file(tmp_path / "clip_l.safetensors"), ("clip_embed", "checkpoint", "any"))
    te = svc.load_model(cfg).model
    assert te.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in te.parameters())
    with torch.no_grad():
        assert te(torch.tensor([[0, 65, 2]])).last_hidden_state.dtype == torch.bfloat16


def test_clip_text_missing_tensor_is_a_clear_error(svc: ModelLoadService, tmp_path: Path, mkcfg: Any) -> None:
    from safetensors.torch import save_file

    sd = _file_sd(F.tiny_clip_l_single_file(tmp_path / "full.safetensors"))
    del sd["text_model.encoder.layers.1.mlp.fc2.weight"]
    broken = tmp_path / "broken.safetensors"
    save_file(sd, str(broken))
    with pytest.raises(ModelLoadError, match=r"missing keys: .*layers\.1\.mlp\.fc2\.weight"):
        svc.load_model(mkcfg(broken, type="clip_embed", format="checkpoint", base="any"))


# ----- T5 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "t5xxl.transformer."])
def test_t5_single_file_matches_reference(
    svc: ModelLoadService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    from safetensors.torch import save_file

    path = F.tiny_t5_single_file(tmp_path / "t5xxl_fp16.safetensors", prefix=prefix)
    # A full T5 file also holds the decoder: it must never be read.
    sd = _file_sd(path)
    sd[prefix + "decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(8, 16)
    save_file({k: v.half() for k, v in sd.items()}, str(path))
    cfg = _record(path, ("t5_encoder", "checkpoint", "any"))
    reads = _spy_reads(monkeypatch)
    t5 = svc.load_model(cfg).model
    assert type(t5).__name__ == "T5EncoderModel" and t5.dtype == torch.float32
    assert reads and not any(k.startswith("decoder.") for k in reads)
    ref = transformers.T5EncoderModel(transformers.T5Config(**F.TINY_T5_CONFIG)).eval()
    want_sd = {k: v for k, v in _file_sd(path, prefix).items() if not k.startswith("decoder.")}
    missing, unexpected = ref.load_state_dict(want_sd, strict=False)
    assert set(missing) <= {"encoder.embed_tokens.weight"} and not unexpected  # tied to shared.weight
    ref.tie_weights()
    ids = torch.tensor([[5, 9, 1, 0]])
    with torch.no_grad():
        assert torch.allclose(t5(ids).last_hidden_state, ref(ids).last_hidden_state, atol=ATOL)
    assert t5.config.d_kv == 4 and t5.config.relative_attention_num_buckets == 8
    with pytest.raises(InvalidSubmodelError, match="no submodel 'tokenizer'"):
        svc.load_model(cfg, "tokenizer")


def test_t5_pickle_file_is_converted_then_loaded(svc: ModelLoadService, tmp_path: Path, mkcfg: Any) -> None:
    sd = _file_sd(F.tiny_t5_single_file(tmp_path / "t5.safetensors"))
    pt = tmp_path / "t5.bin"
    torch.save(sd, pt)
    t5 = svc.load_model(mkcfg(pt, type="t5_encoder", format="checkpoint", base="any")).model
    with torch.no_grad():
        assert t5(torch.tensor([[1, 2, 3]])).last_hidden_state.shape == (1, 3, 16)
    assert len(list(svc.convert_cache.root.glob("*.safetensors"))) == 1


def test_scaled_fp8_encoder_is_refused(svc: ModelLoadService, tmp_path: Path, mkcfg: Any) -> None:
    from safetensors.torch import save_file

    sd = _file_sd(F.tiny_t5_single_file(tmp_path / "t5.safetensors"))
    sd["scaled_fp8"] = torch.zeros(0)
    path = tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ModelLoadError, match="scaled-fp8"):
        svc.load_model(mkcfg(path, type="t5_encoder", format="checkpoint", base="any"))


# ----- CLIP vision --------------------------------------------------------------------------------
@pytest.mark.slow  # ~7 s: builds the reference CLIP vision model twice
def test_clip_vision_single_file_matches_reference(svc: ModelLoadService, tmp_path: Path) -> None:
    path = F.tiny_clip_vision_single_file(tmp_path / "clip_vision_l.safetensors", prefix="clip_vision_model.")
    cfg = _record(path, ("clip_vision", "checkpoint", "any"))
    assert cfg.clip_variant.value == "large"
    model = svc.load_model(cfg).model
    assert type(model).__name__ == "CLIPVisionModelWithProjection" and model.dtype == torch.float32
    ref = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**F.TINY_CLIP_VISION_CONFIG))
    ref.load_state_dict(_file_sd(path, "clip_vision_model."), strict=True)
    pixels = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        got, want = model(pixel_values=pixels), ref.eval()(pixel_values=pixels)
    assert got.image_embeds.shape == (2, 8)
    assert torch.allclose(got.image_embeds, want.image_embeds, atol=ATOL)
    assert torch.allclose(got.last_hidden_state, want.last_hidden_state, atol=ATOL)
    assert (model.config.image_size, model.config.patch_size, model.config.hidden_act) == (8, 4, "quick_gelu")


# ----- SDXL refiner -------------------------------------------------------------------------------
def test_sdxl_refiner_checkpoint_matches_diffusers(svc: ModelLoadService, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    ck = F.tiny_sdxl_refiner_checkpoint(tmp_path / "refiner")
    cfg = _record(ck.path, ("main", "checkpoint", "sdxl-refiner"), config_path=str(ck.config_dir))
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 1280)
    added = {"text_embeds": torch.randn(1, 1280), "time_ids": torch.tensor([[16.0, 16.0, 0.0, 0.0, 6.0]])}
    ref_unet = UNet2DConditionModel.from_pretrained(ck.reference_dir / "unet")
    with torch.no_grad():
        got = svc.load_model(cfg, "unet").model(x, 3, ctx, added_cond_kwargs=added).sample
        assert torch.allclose(got, ref_unet(x, 3, ctx, added_cond_kwargs=added).sample, atol=ATOL)
        img = torch.randn(1, 3, 16, 16)
        vae, ref_vae = svc.load_model(cfg, "vae").model, AutoencoderKL.from_pretrained(ck.reference_dir / "vae")
        got = vae.decode(vae.encode(img).latent_dist.mean).sample
        assert torch.allclose(got, ref_vae.decode(ref_vae.encode(img).latent_dist.mean).sample, atol=ATOL)
        ids = torch.tensor([[512, 65, 66, 513]])
        te2 = svc.load_model(cfg, "text_encoder_2").model
        ref_te2 = transformers.CLIPTextModelWithProjection.from_pretrained(ck.reference_dir / "text_encoder_2")
        got_te, want_te = te2(ids), ref_te2(ids)
    assert type(te2).__name__ == "CLIPTextModelWithProjection"
    assert torch.allclose(got_te.last_hidden_state, want_te.last_hidden_state, atol=ATOL)
    assert torch.allclose(got_te.text_embeds, want_te.text_embeds, atol=ATOL)
    assert type(svc.load_model(cfg, "scheduler").model).__name__ == "EulerDiscreteScheduler"
    with pytest.raises(InvalidSubmodelError, match=r"no submodel 'text_encoder'.*text_encoder_2"):
        svc.load_model(cfg, "text_encoder")
    shipped = _record(ck.path, ("main", "checkpoint", "sdxl-refiner"))  # no config_path: shipped refiner config
    tok = svc.load_model(shipped, "tokenizer_2").model
    assert tok.pad_token == "!" and len(tok) == 49408


# ----- the shipped configs are the real architectures ---------------------------------------------
def test_shipped_configs_build_real_architectures() -> None:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from modeldepot.load.loaders.single_file import shipped_config_dir
    from modeldepot.taxonomy import BaseModelType

    cases = [
        ("clip-l", "CLIPTextModel", "CLIPTextConfig", 123_060_480, sfe.clip_text_config),
        ("clip-g", "CLIPTextModelWithProjection", "CLIPTextConfig", 694_659_840, sfe.clip_text_config),
        ("clip-vision-h", "CLIPVisionModelWithProjection", "CLIPVisionConfig", 632_076_800, sfe.clip_vision_config),
        ("t5-xxl", "T5EncoderModel", "T5Config", 4_893_906_944, None),
    ]
    with init_empty_weights():
        for family, cls_name, conf_name, params, derive in cases:
            shipped = sfe.shipped_encoder_config(family)
            model = getattr(transformers, cls_name)(getattr(transformers, conf_name)(**shipped))
            assert sum(p.numel() for p in model.parameters()) == params, family
            # Deriving the config back from the real tensor shapes gives the shipped one.
            shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            if not hasattr(model, "text_model") and cls_name == "CLIPTextModel":
                shapes = {("text_model." + k if not k.startswith("text_model.") else k): s for k, s in shapes.items()}
            if derive is None:
                derived = sfe.t5_encoder_config(shapes, "", Path(family))
            else:
                derived = derive(shapes, "", Path(family))
                assert derived.pop("_family") == family
            assert {k: derived[k] for k in shipped} == shipped, family
        unet_cfg = UNet2DConditionModel.load_config(shipped_config_dir(BaseModelType.StableDiffusionXLRefiner) / "unet")
        unet = UNet2DConditionModel.from_config(unet_cfg)
    # sd_xl_refiner_1.0.safetensors: 6.08 GB of fp16 = this UNet + the SDXL VAE + OpenCLIP bigG.
    assert sum(p.numel() for p in unet.parameters()) == 2_259_526_660
    assert unet.add_embedding.linear_1.in_features == 2560 and unet_cfg["cross_attention_dim"] == 1280
