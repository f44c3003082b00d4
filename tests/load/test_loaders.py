"""Every built-in loader on tiny real models: each returns a working object (forward passes on CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from modeldepot.config import DepotConfig  # noqa: E402
from modeldepot.errors import UnsafePickleError  # noqa: E402
from modeldepot.load import InvalidSubmodelError, ModelCache, ModelLoadService  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def svc(depot_config: DepotConfig) -> ModelLoadService:
    return ModelLoadService(depot_config, cache=ModelCache(ram_budget_bytes=1 << 30))


def _unet_forward(unet: Any) -> Any:
    x = torch.randn(1, 4, 8, 8, dtype=unet.dtype)
    ctx = torch.randn(1, 3, 16, dtype=unet.dtype)
    with torch.no_grad():
        return unet(x, 10, encoder_hidden_states=ctx).sample


def _vae_roundtrip(vae: Any) -> Any:
    img = torch.randn(1, 3, 16, 16, dtype=vae.dtype)
    with torch.no_grad():
        return vae.decode(vae.encode(img).latent_dist.mean).sample


def test_diffusers_pipeline_submodels(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any) -> None:
    cfg = mkcfg(tiny["pipeline"], type="main", format="diffusers")
    assert _unet_forward(svc.load_model(cfg, "unet").model).shape == (1, 4, 8, 8)
    assert _vae_roundtrip(svc.load_model(cfg, "vae").model).shape == (1, 3, 16, 16)
    tok = svc.load_model(cfg, "tokenizer").model
    ids = tok("a cat", padding="max_length", max_length=8, return_tensors="pt").input_ids
    te = svc.load_model(cfg, "text_encoder").model
    with torch.no_grad():
        assert te(ids).last_hidden_state.shape == (1, 8, 16)
    sched = svc.load_model(cfg, "scheduler").model
    sched.set_timesteps(5)
    assert len(sched.timesteps) > 0
    with pytest.raises(InvalidSubmodelError, match=r"no submodel 'text_encoder_2'.*scheduler"):
        svc.load_model(cfg, "text_encoder_2")


def test_repo_variant_and_precision(home: Path, tiny: dict[str, Any], mkcfg: Any) -> None:
    svc = ModelLoadService(DepotConfig(home=home, precision="bfloat16"))
    cfg = mkcfg(tiny["pipeline_fp16"], type="main", format="diffusers", repo_variant="fp16")
    unet = svc.load_model(cfg, "unet").model
    assert unet.dtype == torch.bfloat16  # settings precision, loaded from the *.fp16.safetensors files
    assert _unet_forward(unet).dtype == torch.bfloat16


def test_single_file_checkpoint_matches_diffusers(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    ck = tiny["checkpoint"]
    cfg = mkcfg(ck.path, type="main", format="checkpoint", config_path=str(ck.config_dir))
    ref_unet = UNet2DConditionModel.from_pretrained(ck.reference_dir / "unet")
    torch.manual_seed(0)
    got = _unet_forward(svc.load_model(cfg, "unet").model)
    torch.manual_seed(0)
    assert torch.allclose(got, _unet_forward(ref_unet), atol=1e-5)
    ref_vae = AutoencoderKL.from_pretrained(ck.reference_dir / "vae")
    torch.manual_seed(1)
    got = _vae_roundtrip(svc.load_model(cfg, "vae").model)
    torch.manual_seed(1)
    assert torch.allclose(got, _vae_roundtrip(ref_vae), atol=1e-5)
    te = svc.load_model(cfg, "text_encoder").model
    ids = torch.tensor([[512, 65, 66, 513]])
    with torch.no_grad():
        assert te(ids).last_hidden_state.shape == (1, 4, 16)
    assert svc.load_model(cfg, "scheduler").model.config.prediction_type == "epsilon"
    assert svc.load_model(cfg, "tokenizer").model("ab").input_ids[0] == 512


def test_pickle_checkpoint_converted_once(
    svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeldepot.testing.factories.torch_models import tiny_sd1_checkpoint

    ck = tiny_sd1_checkpoint(tiny["dir"] / "ckpt-once", fmt="ckpt")
    cfg = mkcfg(ck.path, type="main", format="checkpoint", config_path=str(ck.config_dir))
    loads: list[Path] = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda p, *a, **k: loads.append(Path(p)) or real_load(p, *a, **k))
    unet = svc.load_model(cfg, "unet").model
    assert loads == [ck.path]
    converted = list(svc.convert_cache.root.glob("*.safetensors"))
    assert len(converted) == 1
    svc.load_model(cfg, "vae")  # another part of the same file: reads the converted copy
    svc.cache.clear()
    again = svc.load_model(cfg, "unet").model  # after eviction: still no unpickling
    assert loads == [ck.path] and again is not unet
    assert _unet_forward(again).shape == (1, 4, 8, 8)


def test_malicious_pickle_is_refused(svc: ModelLoadService, tmp_path: Path, mkcfg: Any) -> None:
    import os
    import pickle

    class Evil:
        def __reduce__(self) -> Any:
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"conv_first.weight": Evil()}))
    cfg = mkcfg(bad, type="spandrel_image_to_image", format="checkpoint")
    with pytest.raises(UnsafePickleError, match="system"):
        svc.load_model(cfg)


def test_shipped_configs_build_real_architectures(svc: ModelLoadService) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from modeldepot.load.loaders.single_file import shipped_config_dir
    from modeldepot.taxonomy import BaseModelType

    expected = {BaseModelType.StableDiffusion1: 859_520_964, BaseModelType.StableDiffusion2: 865_910_724,
                BaseModelType.StableDiffusionXL: 2_567_463_684}  # fmt: skip
    for base, params in expected.items():
        folder = shipped_config_dir(base)
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        assert sum(p.numel() for p in unet.parameters()) == params, base
        assert sum(p.numel() for p in vae.parameters()) == 83_653_863


def test_shipped_clip_tokenizer(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any) -> None:
    cfg = mkcfg(tiny["checkpoint"].path, type="main", format="checkpoint")  # shipped sd-1 config
    tok = svc.load_model(cfg, "tokenizer").model
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408


def test_standalone_vae(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any) -> None:
    folder = svc.load_model(mkcfg(tiny["vae"], type="vae", format="diffusers")).model
    ck = tiny["checkpoint"]
    single = svc.load_model(
        mkcfg(tiny["vae_file"], type="vae", format="checkpoint", config_path=str(ck.config_dir))
    ).model
    torch.manual_seed(2)
    a = _vae_roundtrip(folder)
    torch.manual_seed(2)
    assert torch.allclose(a, _vae_roundtrip(single), atol=1e-5)  # same seed, same weights


def test_controlnet_t2i_ip_adapter(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any) -> None:
    cn = svc.load_model(mkcfg(tiny["controlnet"], type="controlnet", format="diffusers")).model
    with torch.no_grad():
        out = cn(torch.randn(1, 4, 8, 8), 10, torch.randn(1, 3, 16), controlnet_cond=torch.randn(1, 3, 16, 16))
    assert out.mid_block_res_sample.shape[0] == 1
    t2i = svc.load_model(mkcfg(tiny["t2i"], type="t2i_adapter", format="diffusers")).model
    with torch.no_grad():
        feats = t2i(torch.randn(1, 3, 64, 64))
    assert len(feats) == 2
    ip = svc.load_model(mkcfg(tiny["ip_adapter"], type="ip_adapter", format="checkpoint")).model
    with torch.no_grad():
        assert ip(torch.randn(1, 8)).shape == (1, 4, 16)
    assert set(ip.layers) == {"1", "3", "5"}


def test_lora_lycoris_ti_state_dicts(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any) -> None:
    lora = svc.load_model(mkcfg(tiny["lora"], type="lora", format="lycoris")).model
    assert lora["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape == (2, 8, 1, 1)
    loha = svc.load_model(mkcfg(tiny["loha_pt"], type="lora", format="lycoris")).model
    assert any(k.endswith("hada_w1_a") for k in loha)
    for key in ("ti_pt", "ti_safetensors"):
        ti = svc.load_model(mkcfg(tiny[key], type="embedding", format="embedding_file")).model
        assert ti["emb_params"].shape == (2, 16), key
    folder = svc.load_model(mkcfg(tiny["ti_folder"], type="embedding", format="embedding_folder")).model
    assert folder["emb_params"].shape == (1, 16)


def test_clip_and_t5_encoders(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any) -> None:
    cfg = mkcfg(tiny["clip"], type="clip_embed", format="diffusers")
    te = svc.load_model(cfg).model
    tok = svc.load_model(cfg, "tokenizer").model
    with torch.no_grad():
        assert te(tok("hi", return_tensors="pt").input_ids).last_hidden_state.shape[-1] == 16
    t5 = svc.load_model(mkcfg(tiny["t5"], type="t5_encoder", format="t5_encoder", base="any")).model
    with torch.no_grad():
        assert t5(torch.tensor([[1, 2, 3]])).last_hidden_state.shape == (1, 3, 16)


@pytest.mark.parametrize(("key", "scale"), [("esrgan_old", 4), ("esrgan_new", 2), ("esrgan_basicsr", 4)])
def test_esrgan_upscaler(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any, key: str, scale: int) -> None:
    model = svc.load_model(mkcfg(tiny[key], type="spandrel_image_to_image", format="checkpoint", base="any")).model
    assert model.scale == scale
    with torch.no_grad():
        assert model(torch.rand(1, 3, 6, 6)).shape == (1, 3, 6 * scale, 6 * scale)


def test_esrgan_layouts_agree(tiny: dict[str, Any]) -> None:
    from modeldepot.load.loaders._rrdbnet import build_rrdbnet
    from modeldepot.testing.factories.torch_models import tiny_esrgan_state_dict

    x = torch.rand(1, 3, 5, 5)
    outs = [build_rrdbnet(tiny_esrgan_state_dict(layout=lay))(x) for lay in ("old", "new", "basicsr")]
    assert torch.allclose(outs[0], outs[1]) and torch.allclose(outs[0], outs[2])


def test_sdxl_single_file_matches_diffusers(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any) -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from modeldepot.testing.factories.torch_models import tiny_sdxl_checkpoint

    ck = tiny_sdxl_checkpoint(tiny["dir"] / "sdxl")
    cfg = mkcfg(ck.path, type="main", format="checkpoint", base="sdxl", config_path=str(ck.config_dir))
    ids = torch.tensor([[512, 65, 66, 513]])
    for sub, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
        with torch.no_grad():
            got = svc.load_model(cfg, sub).model(ids).last_hidden_state
            want = cls.from_pretrained(ck.reference_dir / sub)(ids).last_hidden_state
        assert torch.allclose(got, want, atol=1e-6), sub  # OpenCLIP q/k/v split for text_encoder_2
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 32)
    added = {"text_embeds": torch.randn(1, 16), "time_ids": torch.randn(1, 6)}
    ref = UNet2DConditionModel.from_pretrained(ck.reference_dir / "unet")
    with torch.no_grad():
        got = svc.load_model(cfg, "unet").model(x, 3, ctx, added_cond_kwargs=added).sample
        assert torch.allclose(got, ref(x, 3, ctx, added_cond_kwargs=added).sample, atol=1e-5)
    assert type(svc.load_model(cfg, "tokenizer_2").model).__name__ == "CLIPTokenizer"


def test_ip_adapter_invokeai_folder_and_controlnet_file(
    svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "ip"
    folder.mkdir()
    (folder / "ip_adapter.safetensors").write_bytes(tiny["ip_adapter"].read_bytes())
    (folder / "image_encoder.txt").write_text("clip-vit-h")
    ip = svc.load_model(mkcfg(folder, type="ip_adapter", format="invokeai")).model
    assert ip(torch.randn(2, 8)).shape == (2, 4, 16)
    # A ControlNet shipped as one file with diffusers keys, loaded with a config folder.
    cn_dir = tiny["controlnet"]
    from safetensors.torch import load_file

    single = tmp_path / "cn.safetensors"
    save_file(load_file(str(cn_dir / "diffusion_pytorch_model.safetensors")), str(single))
    conf = tmp_path / "conf" / "controlnet"
    conf.mkdir(parents=True)
    (conf / "config.json").write_bytes((cn_dir / "config.json").read_bytes())
    cn = svc.load_model(mkcfg(single, type="controlnet", format="checkpoint", config_path=str(conf.parent))).model
    with torch.no_grad():
        out = cn(torch.randn(1, 4, 8, 8), 10, torch.randn(1, 3, 16), controlnet_cond=torch.randn(1, 3, 16, 16))
    assert len(out.down_block_res_samples) > 0


def test_sizes_count_parameters_and_buffers_once() -> None:
    from modeldepot.load import model_size

    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(lin, lin, torch.nn.BatchNorm1d(4))  # tied: one Linear twice
    expected = (16 + 4) * 4 + (4 + 4) * 4 + (4 + 4) * 4 + 8  # linear, bn affine, running stats, num_batches
    assert model_size(model) == expected
    assert model_size({"a": torch.zeros(10, dtype=torch.float16), "n": {"b": torch.zeros(2)}}) == 28
    assert model_size(object()) == 0


def test_clip_vision(svc: ModelLoadService, tmp_path: Path, mkcfg: Any) -> None:
    from modeldepot.testing.factories.torch_models import tiny_clip_vision

    model = svc.load_model(mkcfg(tiny_clip_vision(tmp_path / "cv"), type="clip_vision", format="diffusers")).model
    with torch.no_grad():
        assert model(pixel_values=torch.randn(1, 3, 8, 8)).image_embeds.shape == (1, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_lock_moves_and_unload_restores(depot_config: DepotConfig, tiny: dict[str, Any], mkcfg: Any) -> None:
    from modeldepot.load import TorchDevice

    svc = ModelLoadService(depot_config, cache=ModelCache(1 << 30, 1 << 30, device=TorchDevice("cuda:0")))
    loaded = svc.load_model(mkcfg(tiny["pipeline"], type="main", format="diffusers"), "unet")
    with loaded as unet:
        assert next(unet.parameters()).is_cuda
        x = torch.randn(1, 4, 8, 8, device="cuda")
        assert unet(x, 3, encoder_hidden_states=torch.randn(1, 3, 16, device="cuda")).sample.is_cuda
    svc.cache.make_room_on_device(2 << 30)
    assert not next(loaded.model.parameters()).is_cuda
