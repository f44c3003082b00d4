"""LoRA / LyCORIS patching of cached modules: same result as diffusers' own fuse, and an exact restore."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from modeldepot.errors import ServiceInputError  # noqa: E402
from modeldepot.services._lora import _index, locked, module_lock, patched_loras  # noqa: E402
from modeldepot.testing.factories import tiny_lora_for  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402

SDXL_TARGETS = (
    "attn1.to_q", "attn2.to_k", "attn1.to_out.0", "proj_in", "proj_out", "ff.net.2", "conv1", "conv2",
    "time_emb_proj", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "conv_in", "conv_out",
    "time_embedding.linear_1", "add_embedding.linear_2", "self_attn.q_proj", "mlp.fc1",
)  # fmt: skip


# ----- helpers ---------------------------------------------------------------------------------------
def snapshot(module: Any) -> dict[str, Any]:
    """Deep copies of every tensor, and the identity / storage / dtype of every parameter."""
    return {
        "tensors": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "params": {n: (p, p.data_ptr(), p.dtype, p.device) for n, p in module.named_parameters()},
    }


def assert_restored(module: Any, snap: dict[str, Any]) -> None:
    now = module.state_dict()
    assert now.keys() == snap["tensors"].keys()
    for k, v in snap["tensors"].items():
        assert now[k].dtype == v.dtype and now[k].device == v.device, k
        assert torch.equal(now[k], v), k
    for n, p in module.named_parameters():
        obj, ptr, dtype, device = snap["params"][n]
        assert p is obj and p.data_ptr() == ptr and p.dtype == dtype and p.device == device, n


def unet_inputs(unet: Any, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    dtype = next(unet.parameters()).dtype
    kw: dict[str, Any] = {
        "sample": torch.randn(1, 4, 8, 8, generator=g).to(dtype),
        "timestep": torch.tensor([10]),
        "encoder_hidden_states": torch.randn(1, 5, unet.config.cross_attention_dim, generator=g).to(dtype),
    }
    if unet.config.addition_embed_type == "text_time":
        kw["added_cond_kwargs"] = {
            "text_embeds": torch.randn(1, F.TINY_CROSS_DIM, generator=g).to(dtype),
            "time_ids": torch.randn(1, 6, generator=g).to(dtype),
        }
    return kw


def run_unet(unet: Any, seed: int = 0) -> Any:
    with torch.no_grad():
        return unet(**unet_inputs(unet, seed)).sample


def run_te(te: Any) -> Any:
    ids = torch.tensor([[F.TINY_VOCAB - 2, 70, 71, 72, 73, F.TINY_VOCAB - 1]])
    with torch.no_grad():
        return te(ids).last_hidden_state


def hand_lora(module: Any, sd: dict[str, Any], prefix: str, weight: float) -> dict[str, Any]:
    """Expected state dict of ``module`` after a kohya LoRA: W + weight * alpha / rank * up @ down, computed
    here from the file (names found by walking the module, independent of the patcher's index)."""
    out = {k: v.clone() for k, v in module.state_dict().items()}
    names = {n.replace(".", "_"): n for n, _ in module.named_modules()}
    names |= {("text_model." + n).replace(".", "_"): n for n, _ in module.named_modules()}
    for key in sd:
        if not (key.startswith(prefix) and key.endswith(".lora_down.weight")):
            continue
        base = key.removesuffix(".lora_down.weight")
        down, up = sd[key], sd[base + ".lora_up.weight"]
        scale = sd[base + ".alpha"].item() / down.shape[0]
        w = out[names[base[len(prefix) :]] + ".weight"]
        out[names[base[len(prefix) :]] + ".weight"] = w + weight * scale * (up.flatten(1) @ down.flatten(1)).view(
            w.shape
        )
    return out


def sd_pipeline(unet: Any, te: Any, tok_dir: Path) -> Any:
    import diffusers
    from transformers import CLIPTokenizer

    return diffusers.StableDiffusionPipeline(
        vae=F.tiny_vae_model(1), text_encoder=te, tokenizer=CLIPTokenizer.from_pretrained(tok_dir), unet=unet,
        scheduler=F._scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def sdxl_pipeline(unet: Any, te: Any, te2: Any, tok_dir: Path) -> Any:
    import diffusers
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tok_dir)
    sched = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return diffusers.StableDiffusionXLPipeline(
        vae=F.tiny_vae_model(1), text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok, unet=unet,
        scheduler=sched,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return F.tiny_clip_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def sd1() -> dict[str, Any]:
    return {"unet": F.tiny_unet(0), "text_encoder": F.tiny_clip_text_model(2)}


@pytest.fixture
def sdxl() -> dict[str, Any]:
    return {
        "unet": F.tiny_sdxl_unet(20),
        "text_encoder": F.tiny_clip_text_model(22),
        "text_encoder_2": F.tiny_clip_text_model(23, with_projection=True),
    }


# ----- against diffusers' own fuse_lora ------------------------------------------------------------
@pytest.mark.parametrize("style", ["kohya", "peft"])
def test_sd1_patch_equals_diffusers_fuse_and_restores(style: str, sd1: dict[str, Any], tok_dir: Path, tmp_path: Path):
    unet, te = sd1["unet"], sd1["text_encoder"]
    path = tiny_lora_for(tmp_path / "l.safetensors", unet, te, style=style, seed=1)
    sd = load_file(path)
    before_u, before_t = snapshot(unet), snapshot(te)
    out0, te0 = run_unet(unet), run_te(te)

    pipe = sd_pipeline(copy.deepcopy(unet), copy.deepcopy(te), tok_dir)
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=0.7)
    want_unet = run_unet(pipe.unet)

    with patched_loras({"unet": unet, "text_encoder": te}, [("mine", sd, 0.7)]) as report:
        got_unet, got_te = run_unet(unet), run_te(te)
    assert not torch.allclose(got_unet, out0, atol=1e-3)
    torch.testing.assert_close(got_unet, want_unet, atol=1e-4, rtol=0)
    assert report.unmatched == {"mine": []}
    assert any(k.startswith("text_encoder:") for k in report.patched["mine"])
    assert "unet:down_blocks.0.resnets.0.conv1" in report.patched["mine"]  # a 3x3 LoCon layer
    if style == "peft":
        torch.testing.assert_close(got_te, run_te(pipe.text_encoder), atol=1e-4, rtol=0)
    else:
        # diffusers 0.42 drops kohya self-attention keys on transformers 5's CLIPTextModel: compare by hand
        expect = copy.deepcopy(te)
        expect.load_state_dict(hand_lora(te, sd, "lora_te_", 0.7))
        torch.testing.assert_close(got_te, run_te(expect), atol=1e-5, rtol=0)
    assert not torch.allclose(got_te, te0, atol=1e-4)
    assert_restored(unet, before_u)
    assert_restored(te, before_t)


def test_sdxl_sgm_names_equal_diffusers_fuse(sdxl: dict[str, Any], tok_dir: Path, tmp_path: Path):
    unet, te, te2 = sdxl["unet"], sdxl["text_encoder"], sdxl["text_encoder_2"]
    path = tiny_lora_for(
        tmp_path / "xl.safetensors", unet, te, text_encoder_2=te2, style="kohya_sgm", targets=SDXL_TARGETS
    )
    sd = load_file(path)
    assert any(k.startswith("lora_unet_input_blocks_3_1_transformer_blocks_1_") for k in sd)
    assert any(k.startswith("lora_unet_output_blocks_1_2_conv") for k in sd)  # upsampler after an attention
    snaps = {name: snapshot(m) for name, m in sdxl.items()}
    pipe = sdxl_pipeline(copy.deepcopy(unet), copy.deepcopy(te), copy.deepcopy(te2), tok_dir)
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=1.3)
    want = run_unet(pipe.unet)

    with patched_loras(sdxl, [("xl", sd, 1.3)]) as report:
        got, got_te2 = run_unet(unet), run_te(te2)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert report.unmatched == {"xl": []}
    assert len({k.split(":")[0] for k in report.patched["xl"]}) == 3
    expect = copy.deepcopy(te2)
    expect.load_state_dict(hand_lora(te2, sd, "lora_te2_", 1.3))
    torch.testing.assert_close(got_te2, run_te(expect), atol=1e-5, rtol=0)
    for name, module in sdxl.items():
        assert_restored(module, snaps[name])


def test_sd1_lora_with_ldm_names_equals_diffusers_names(sd1: dict[str, Any], tmp_path: Path):
    unet = sd1["unet"]
    # same seed and layer order: the two files hold the same factors under two naming schemes
    targets = ("attn2.to_k", "proj_out", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv")
    a = load_file(tiny_lora_for(tmp_path / "a.safetensors", unet, style="kohya", targets=targets))
    b = load_file(tiny_lora_for(tmp_path / "b.safetensors", unet, style="kohya_sgm", targets=targets))
    assert set(a) != set(b) and any("input_blocks" in k for k in b)
    with patched_loras({"unet": unet}, [("a", a, 1.0)]) as ra:
        wa = {k: v.clone() for k, v in unet.state_dict().items()}
    with patched_loras({"unet": unet}, [("b", b, 1.0)]) as rb:
        wb = unet.state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(ra.patched["a"]) == sorted(rb.patched["b"])
    assert len(ra.patched["a"]) == len({k.split(".")[0] for k in a})


# ----- LyCORIS against formulas written here ----------------------------------------------------------
def _kron(a: Any, b: Any) -> Any:
    """Kronecker product by broadcasting (2-D a, 2-D or 4-D b), not torch.kron."""
    if b.dim() == 2:
        return (a[:, None, :, None] * b[None, :, None, :]).reshape(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1])
    out = a[:, None, :, None, None, None] * b[None, :, None, :, :, :]
    return out.reshape(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1], *b.shape[2:])


def expected_lycoris(unet: Any, sd: dict[str, Any], weight: float) -> dict[str, Any]:
    out = {k: v.clone() for k, v in unet.state_dict().items()}
    names = {n.replace(".", "_"): n for n, _ in unet.named_modules()}
    for base in {k.split(".")[0] for k in sd}:
        name = names[base.removeprefix("lora_unet_")]
        w = out[name + ".weight"]
        p = {k.split(".", 1)[1]: v for k, v in sd.items() if k.split(".")[0] == base}
        if "hada_w1_a" in p:
            delta = (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
            delta = delta * p["alpha"].item() / p["hada_w1_b"].shape[0]
        elif "diff" in p:
            delta = p["diff"]
            if "diff_b" in p:
                out[name + ".bias"] = out[name + ".bias"] + weight * p["diff_b"]
        else:
            w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
            w2 = p["lokr_w2"] if "lokr_w2" in p else p["lokr_w2_a"] @ p["lokr_w2_b"]
            rank = (p["lokr_w1_b"] if "lokr_w1_b" in p else p["lokr_w2_b"]).shape[0]
            delta = _kron(w1, w2) * p["alpha"].item() / rank
        out[name + ".weight"] = w + weight * delta.reshape(w.shape)
    return out


@pytest.mark.parametrize("style", ["loha", "lokr", "full"])
def test_lycoris_matches_formula(style: str, sd1: dict[str, Any], tmp_path: Path):
    unet = sd1["unet"]
    sd = load_file(tiny_lora_for(tmp_path / f"{style}.safetensors", unet, style=style, seed=3))
    if style == "lokr":  # both LoKr shapes and a 3x3 conv are exercised
        assert any(k.endswith("lokr_w1") for k in sd) and any(k.endswith("lokr_w2") for k in sd)
        assert any(k.endswith("lokr_w2") and sd[k].dim() == 4 for k in sd)
    before, out0 = snapshot(unet), run_unet(unet)
    want = expected_lycoris(unet, sd, 0.6)
    ref = copy.deepcopy(unet)
    ref.load_state_dict(want)
    with patched_loras({"unet": unet}, [(style, sd, 0.6)]) as report:
        now = unet.state_dict()
        for k, v in want.items():
            torch.testing.assert_close(now[k], v, atol=1e-6, rtol=0, msg=k)
        got = run_unet(unet)
    torch.testing.assert_close(got, run_unet(ref), atol=1e-5, rtol=0)
    assert not torch.allclose(got, out0, atol=1e-3)
    assert report.unmatched == {style: []} and report.layer_count == len({k.split(".")[0] for k in sd})
    assert_restored(unet, before)


def test_locon_mid_equals_three_convolutions(sd1: dict[str, Any]):
    unet = sd1["unet"]
    conv = unet.down_blocks[0].resnets[0].conv1  # 3x3, 8 -> 8
    g = torch.Generator().manual_seed(5)
    down, mid, up = (
        torch.randn(2, 8, 1, 1, generator=g),
        torch.randn(2, 2, 3, 3, generator=g),
        torch.randn(8, 2, 1, 1, generator=g),
    )
    base = "lora_unet_down_blocks_0_resnets_0_conv1"
    sd = {f"{base}.lora_down.weight": down, f"{base}.lora_mid.weight": mid, f"{base}.lora_up.weight": up,
          f"{base}.alpha": torch.tensor(1.0)}  # fmt: skip
    x = torch.randn(1, 8, 6, 6, generator=g)
    fn = torch.nn.functional
    with torch.no_grad():
        want = conv(x) + 0.5 * 0.5 * fn.conv2d(fn.conv2d(fn.conv2d(x, down), mid, padding=1), up)
        with patched_loras({"unet": unet}, [("locon", sd, 0.5)]):
            got = conv(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ----- semantics -------------------------------------------------------------------------------------
def test_weight_zero_changes_nothing(sd1: dict[str, Any], tmp_path: Path):
    sd = load_file(tiny_lora_for(tmp_path / "l.safetensors", sd1["unet"], sd1["text_encoder"]))
    out0, before = run_unet(sd1["unet"]), snapshot(sd1["unet"])
    with patched_loras(sd1, [("zero", sd, 0.0)]) as report:
        assert torch.equal(run_unet(sd1["unet"]), out0)
        assert_restored(sd1["unet"], before)  # not even swapped
    assert report.patched == {"zero": []}


def test_two_loras_add_up(sd1: dict[str, Any], tmp_path: Path):
    unet = sd1["unet"]
    a = load_file(tiny_lora_for(tmp_path / "a.safetensors", unet, seed=1))
    b = load_file(tiny_lora_for(tmp_path / "b.safetensors", unet, seed=2, style="loha"))
    orig = {k: v.clone() for k, v in unet.state_dict().items()}
    deltas = []
    for label, sd, w in (("a", a, 0.5), ("b", b, 0.8)):
        with patched_loras({"unet": unet}, [(label, sd, w)]):
            deltas.append({k: v - orig[k] for k, v in unet.state_dict().items()})
    with patched_loras({"unet": unet}, [("a", a, 0.5), ("b", b, 0.8)]) as report:
        both = unet.state_dict()
        changed = 0
        for k in orig:
            want = orig[k] + deltas[0][k] + deltas[1][k]
            torch.testing.assert_close(both[k], want, atol=1e-6, rtol=0, msg=k)
            changed += int(not torch.equal(both[k], orig[k]))
    assert changed > 10
    assert set(report.patched) == {"a", "b"} and set(report.patched["a"]) & set(report.patched["b"])
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in orig.items())


def test_exception_inside_restores(sd1: dict[str, Any], tmp_path: Path):
    sd = load_file(tiny_lora_for(tmp_path / "l.safetensors", sd1["unet"], sd1["text_encoder"]))
    snaps = {n: snapshot(m) for n, m in sd1.items()}
    with pytest.raises(RuntimeError, match="boom"), patched_loras(sd1, [("l", sd, 1.0)]):
        assert not torch.equal(
            sd1["unet"].down_blocks[0].resnets[0].conv1.weight,
            snaps["unet"]["tensors"]["down_blocks.0.resnets.0.conv1.weight"],
        )
        raise RuntimeError("boom")
    for n, m in sd1.items():
        assert_restored(m, snaps[n])


def test_lora_for_another_base_is_refused(sd1: dict[str, Any], sdxl: dict[str, Any], tmp_path: Path):
    only_xl = ("add_embedding.linear_1", "transformer_blocks.1.attn1.to_q")
    sd = load_file(tiny_lora_for(tmp_path / "xl.safetensors", sdxl["unet"], style="kohya_sgm", targets=only_xl))
    refused = pytest.raises(ServiceInputError, match=r"LoRA 'xl-style' matches no layer.*lora_unet_")
    with refused, patched_loras(sd1, [("xl-style", sd, 1.0)]):
        pass


def test_shape_mismatch_names_layer_and_shapes_and_leaves_nothing_patched(
    sd1: dict[str, Any], sdxl: dict[str, Any], tmp_path: Path
):
    # an SDXL LoRA's cross-attention keys are 32 wide; the SD-1 middle block with the same name takes 16
    good = load_file(tiny_lora_for(tmp_path / "ok.safetensors", sd1["unet"]))
    bad = load_file(
        tiny_lora_for(tmp_path / "xl.safetensors", sdxl["unet"], style="kohya_sgm", targets=("attn2.to_k",))
    )
    before = snapshot(sd1["unet"])
    with pytest.raises(ServiceInputError) as info, patched_loras(sd1, [("ok", good, 1.0), ("xl", bad, 1.0)]):
        pass
    msg = str(info.value)
    assert "'xl'" in msg and "mid_block.attentions.0.transformer_blocks.0.attn2.to_k" in msg
    assert "(16, 16)" in msg and "(16, 32)" in msg
    assert_restored(sd1["unet"], before)


def test_partial_match_is_reported(sd1: dict[str, Any], tmp_path: Path):
    sd = dict(load_file(tiny_lora_for(tmp_path / "l.safetensors", sd1["unet"], targets=("attn1.to_q",))))
    sd["lora_unet_no_such_block_proj.lora_down.weight"] = torch.zeros(2, 4)
    sd["lora_unet_no_such_block_proj.lora_up.weight"] = torch.zeros(4, 2)
    sd["something_else.weight"] = torch.zeros(1)
    with patched_loras(sd1, [("p", sd, 1.0)]) as report:
        pass
    assert sorted(report.unmatched["p"]) == ["lora_unet_no_such_block_proj", "something_else.weight"]
    assert len(report.patched["p"]) == 4  # down, mid and two up blocks


def test_unsupported_lycoris_kind_is_named(sd1: dict[str, Any]):
    base = "lora_unet_down_blocks_0_resnets_0_conv1"
    shapes = {"hada_w1_a": (8, 2), "hada_w1_b": (2, 8), "hada_t1": (2, 2, 3, 3)}
    shapes |= {k.replace("1", "2"): v for k, v in shapes.items()}
    sd = {f"{base}.{k}": torch.ones(*v) for k, v in shapes.items()}
    with pytest.raises(ServiceInputError, match=r"Tucker.*hada_t1"), patched_loras(sd1, [("tucker", sd, 1.0)]):
        pass


def test_float16_unet_patched_and_restored_exactly(tmp_path: Path):
    unet = F.tiny_unet(0).half()
    sd = load_file(tiny_lora_for(tmp_path / "l.safetensors", unet))
    before = snapshot(unet)
    with patched_loras({"unet": unet}, [("l", sd, 1.0)]):
        w = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
        assert w.dtype == torch.float16
        assert not torch.equal(
            w, before["tensors"]["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"]
        )
    assert_restored(unet, before)


def test_other_spellings_patch_identically(sd1: dict[str, Any], tmp_path: Path):
    """PEFT keys with ``text_model.``, ``base_model.model.``-less diffusers ``lora.down`` keys and the
    attention-processor ``to_q_lora`` format all name the same layers."""
    sd = load_file(tiny_lora_for(tmp_path / "p.safetensors", sd1["unet"], sd1["text_encoder"], style="peft"))

    def respell(key: str) -> str:
        key = key.replace("text_encoder.encoder.", "text_encoder.text_model.encoder.")
        key = key.replace(".attn1.to_q.lora_A.weight", ".attn1.processor.to_q_lora.down.weight")
        key = key.replace(".attn1.to_q.lora_B.weight", ".attn1.processor.to_q_lora.up.weight")
        key = key.replace(".self_attn.q_proj.lora_A.weight", ".self_attn.processor.to_q_lora.down.weight")
        key = key.replace(".self_attn.q_proj.lora_B.weight", ".self_attn.processor.to_q_lora.up.weight")
        return key.replace(".lora_A.weight", ".lora.down.weight").replace(".lora_B.weight", ".lora.up.weight")

    other = {respell(k): v for k, v in sd.items()}
    assert len(set(other) - set(sd)) == len(sd)
    results = []
    for label, state in (("peft", sd), ("old", other)):
        with patched_loras(sd1, [(label, state, 0.9)]) as report:
            results.append(({k: v.clone() for m in sd1.values() for k, v in m.state_dict().items()}, report))
    (a, ra), (b, rb) = results
    assert rb.unmatched == {"old": []} and sorted(ra.patched["peft"]) == sorted(rb.patched["old"])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_index_built_once_and_lock_held(sd1: dict[str, Any], tmp_path: Path):
    unet = sd1["unet"]
    assert _index(unet) is _index(unet)
    sd = load_file(tiny_lora_for(tmp_path / "l.safetensors", unet))
    seen: list[bool] = []

    def try_lock() -> None:
        lock = module_lock(unet)
        got = lock.acquire(blocking=False)
        seen.append(got)
        if got:
            lock.release()

    with patched_loras({"unet": unet}, [("l", sd, 1.0)]):
        t = threading.Thread(target=try_lock)
        t.start()
        t.join()
        with locked([unet, sd1["text_encoder"], unet]):  # re-entrant in the owning thread
            pass
    t = threading.Thread(target=try_lock)
    t.start()
    t.join()
    assert seen == [False, True]


def test_bad_arguments():
    unet = F.tiny_unet(0)
    with pytest.raises(ServiceInputError, match="vae"), patched_loras({"vae": unet}, []):
        pass
    bad_weight: list[Any] = [("x", {}, "strong")]
    with pytest.raises(ServiceInputError, match="weight must be a number"), patched_loras({"unet": unet}, bad_weight):
        pass


def test_linear_lora_stored_as_1x1_conv_and_transposed_factors_refused(sd1: dict[str, Any], tmp_path: Path):
    unet = sd1["unet"]
    sd = load_file(tiny_lora_for(tmp_path / "l.safetensors", unet, targets=("attn2.to_k", "attn2.to_v")))
    as_conv = {k: v[:, :, None, None] if v.dim() == 2 else v for k, v in sd.items()}
    with patched_loras({"unet": unet}, [("linear", sd, 1.0)]):
        want = {k: v.clone() for k, v in unet.state_dict().items()}
    with patched_loras({"unet": unet}, [("conv", as_conv, 1.0)]):
        assert all(torch.equal(v, want[k]) for k, v in unet.state_dict().items())
    # up @ down of a 16 -> 8 layer transposed has the right size but the wrong layout
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    swapped = {f"{base}.lora_down.weight": torch.ones(2, 8), f"{base}.lora_up.weight": torch.ones(16, 2)}
    with (
        pytest.raises(ServiceInputError, match=r"\(8, 16\).*\(16, 8\)"),
        patched_loras({"unet": unet}, [("t", swapped, 1.0)]),
    ):
        pass


def test_lora_from_the_depot(sd1: dict[str, Any], tmp_path: Path):
    """The loader's state dict (alpha kept exact) is what ``patched_loras`` takes."""
    from modeldepot import ModelManager

    path = tiny_lora_for(tmp_path / "files" / "kohya.safetensors", sd1["unet"], sd1["text_encoder"], seed=4)
    with ModelManager.open(home=tmp_path / "home") as mm:
        state = mm.load_model_by_key(mm.install.register_path(path)).model
    direct = load_file(path)
    with patched_loras(sd1, [("depot", state, 0.8)]) as report:
        via_depot = {k: v.clone() for k, v in sd1["unet"].state_dict().items()}
    with patched_loras(sd1, [("file", direct, 0.8)]):
        assert all(torch.equal(v, via_depot[k]) for k, v in sd1["unet"].state_dict().items())
    assert report.unmatched == {"depot": []} and report.layer_count == len({k.split(".")[0] for k in direct})


def test_factors_that_do_not_multiply_are_named(sd1: dict[str, Any]):
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    sd = {f"{base}.hada_w1_a": torch.ones(8, 2), f"{base}.hada_w1_b": torch.ones(3, 8),
          f"{base}.hada_w2_a": torch.ones(8, 2), f"{base}.hada_w2_b": torch.ones(2, 8)}  # fmt: skip
    before = snapshot(sd1["unet"])
    with (
        pytest.raises(ServiceInputError, match=r"'bad'.*attn1.to_q.*do not fit"),
        patched_loras(sd1, [("bad", sd, 1.0)]),
    ):
        pass
    assert_restored(sd1["unet"], before)
