"""The kohya export: PEFT adapters renamed to kohya keys give the same UNet / text encoder output when the
services patch them in (the layout and the alpha / rank scale are what A1111 and ComfyUI read), and the
header hash is Civitai's AutoV3 of the written file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model  # noqa: E402
from safetensors import safe_open  # noqa: E402

from modeldepot.hashing import autov3  # noqa: E402
from modeldepot.services._lora import patched_loras  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402
from modeldepot.train._files import save_tensors  # noqa: E402
from modeldepot.train._kohya import kohya_state_dict, tensor_sha256  # noqa: E402
from modeldepot.train._loop import TEXT_ENCODER_TARGETS, UNET_TARGETS  # noqa: E402

pytestmark = pytest.mark.torch


def _adapted(module: torch.nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> torch.nn.Module:
    """A copy of ``module`` with PEFT LoRA adapters whose B factors are random (fresh ones are zero)."""
    adapted = copy.deepcopy(module)
    torch.manual_seed(0)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets)), adapted)
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    return adapted


@pytest.mark.parametrize(("rank", "alpha"), [(4, 4.0), (2, 8.0)])
def test_kohya_keys_reproduce_the_peft_output(rank: int, alpha: float) -> None:
    unet, text = F.tiny_unet(seed=1), F.tiny_clip_text_model(seed=2)
    a_unet, a_text = _adapted(unet, UNET_TARGETS, rank, alpha), _adapted(text, TEXT_ENCODER_TARGETS, rank, alpha)
    sd = kohya_state_dict(
        {"unet": get_peft_model_state_dict(a_unet), "text_encoder": get_peft_model_state_dict(a_text)},
        alpha,
        sdxl=False,
    )
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in sd)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in sd
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in sd
    assert float(sd["lora_te_text_model_encoder_layers_0_mlp_fc1.alpha"]) == alpha

    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    with torch.no_grad():
        hidden = a_text(ids)[0]
        want = a_unet(sample, 10, hidden).sample
        with patched_loras({"unet": unet, "text_encoder": text}, [("trained", sd, 1.0)]):
            got_hidden = text(ids)[0]
            got = unet(sample, 10, got_hidden).sample
        plain = unet(sample, 10, text(ids)[0]).sample
    torch.testing.assert_close(got_hidden, hidden, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(plain, want, atol=1e-4)  # the adapters do change the output


def test_sdxl_encoders_are_te1_and_te2() -> None:
    state = {"q.lora_A.weight": torch.zeros(2, 4), "q.lora_B.weight": torch.zeros(4, 2)}
    sd = kohya_state_dict({"unet": state, "text_encoder": state, "text_encoder_2": state}, 2.0, sdxl=True)
    assert sorted({k.split("_q.")[0] for k in sd}) == ["lora_te1_text_model", "lora_te2_text_model", "lora_unet"]


def test_unexpected_peft_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unexpected PEFT key"):
        kohya_state_dict({"unet": {"q.lora_magnitude_vector": torch.zeros(2)}}, 1.0, sdxl=False)


def test_header_hash_is_autov3_of_the_written_file(tmp_path: Path) -> None:
    tensors = {"b.lora_up.weight": torch.randn(3, 2), "a.lora_down.weight": torch.randn(2, 5)}
    digest = tensor_sha256(tensors)
    path = save_tensors(tmp_path / "x.safetensors", tensors, {"sshs_model_hash": digest, "long": "m" * 999})
    assert (autov3(path) or "").lower() == digest
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["sshs_model_hash"] == digest
    assert not [p for p in tmp_path.iterdir() if p.name != "x.safetensors"]  # no temp file left
