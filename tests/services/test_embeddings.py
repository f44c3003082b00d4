"""Textual-inversion embeddings: new tokenizers, a temporary input embedding, and an exact restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from modeldepot.errors import ServiceInputError  # noqa: E402
from modeldepot.services._embeddings import expand_prompt, textual_inversions, token_names  # noqa: E402
from modeldepot.services._lora import module_lock  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return F.tiny_clip_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def tok(tok_dir: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tok_dir)


@pytest.fixture
def te() -> Any:
    return F.tiny_clip_text_model(2)


def vectors(n: int, width: int = F.TINY_CROSS_DIM, seed: int = 0) -> Any:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def enter(pairs: list[tuple[Any, Any]], embeddings: list[tuple[str, Any]]) -> None:
    """Enter and leave a context (for the error cases, which raise on entry)."""
    with textual_inversions(pairs, embeddings):
        pass


def encode(tokenizer: Any, encoder: Any, text: str) -> tuple[Any, Any]:
    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        return ids, encoder(ids).last_hidden_state


def test_trigger_rows_are_the_vectors_and_everything_is_restored(tok: Any, te: Any):
    vec = vectors(3)
    original = te.get_input_embeddings()
    weight_before = original.weight.detach().clone()
    _, without = encode(tok, te, "a tinyemb cat")
    with textual_inversions([(tok, te)], [("tinyemb", {"emb_params": vec})]) as (tok2,):
        assert tok2 is not tok and len(tok2) == len(tok) + 3
        prompt = expand_prompt("a tinyemb cat", tok2, ["tinyemb"])
        assert prompt == "a tinyemb tinyemb_1 tinyemb_2 cat"
        ids, with_emb = encode(tok2, te, prompt)
        new_ids = tok2.convert_tokens_to_ids(token_names("tinyemb", 3))
        assert [i for i in ids[0].tolist() if i in new_ids] == new_ids  # each vector once, in order
        rows = te.get_input_embeddings()(torch.tensor(new_ids))
        assert torch.equal(rows, vec)
        assert te.get_input_embeddings() is not original and te.config.vocab_size == F.TINY_VOCAB + 3
        # the other rows are the original ones
        assert torch.equal(te.get_input_embeddings().weight[: F.TINY_VOCAB], weight_before)
    assert with_emb.shape[1] != without.shape[1] or not torch.allclose(with_emb, without)
    assert te.get_input_embeddings() is original
    assert torch.equal(original.weight, weight_before)
    assert te.config.vocab_size == F.TINY_VOCAB
    assert len(tok) == F.TINY_VOCAB and "tinyemb" not in tok.get_vocab()
    _, after = encode(tok, te, "a tinyemb cat")
    assert torch.equal(after, without)


def test_diffusers_pipeline_expands_the_trigger_itself(tok: Any, te: Any):
    diffusers = pytest.importorskip("diffusers")
    vec = vectors(2, seed=1)
    with textual_inversions([(tok, te)], [("MyStyle", {"emb_params": vec})]) as (tok2,):
        pipe = diffusers.StableDiffusionPipeline(
            vae=F.tiny_vae_model(1), text_encoder=te, tokenizer=tok2, unet=F.tiny_unet(0), scheduler=F._scheduler(),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
        assert pipe.maybe_convert_prompt("in MyStyle", tok2) == "in MyStyle MyStyle_1"  # mixed case works
        embeds, _ = pipe.encode_prompt("in MyStyle", "cpu", 1, False)
        ids = tok2("in MyStyle MyStyle_1", padding="max_length", max_length=77, truncation=True).input_ids
        with torch.no_grad():
            want = te(torch.tensor([ids])).last_hidden_state
        assert torch.equal(embeds, want)
        assert expand_prompt("in MyStyle MyStyle_1", tok2, ["MyStyle"]) == "in MyStyle MyStyle_1"  # idempotent


def test_exception_inside_restores(tok: Any, te: Any):
    original = te.get_input_embeddings()
    with (
        pytest.raises(RuntimeError, match="boom"),
        textual_inversions([(tok, te)], [("tinyemb", {"emb_params": vectors(1)})]),
    ):
        assert te.get_input_embeddings() is not original
        raise RuntimeError("boom")
    assert te.get_input_embeddings() is original and te.config.vocab_size == F.TINY_VOCAB


def test_sdxl_pairs_get_their_own_vectors(tok: Any, tok_dir: Path):
    from transformers import CLIPTokenizer

    tok_2 = CLIPTokenizer.from_pretrained(tok_dir)
    te1, te2 = F.tiny_clip_text_model(22), F.tiny_clip_text_model(23, with_projection=True)
    originals = (te1.get_input_embeddings(), te2.get_input_embeddings())
    sdxl_emb = {"clip_l": vectors(2, seed=3), "clip_g": vectors(2, seed=4)}
    sd1_emb = {"emb_params": vectors(1, seed=5)}
    with textual_inversions([(tok, te1), (tok_2, te2)], [("xlemb", sdxl_emb), ("oldemb", sd1_emb)]) as toks:
        t1, t2 = toks
        assert t1 is not tok and t2 is not tok_2
        for t, encoder, want in ((t1, te1, sdxl_emb["clip_l"]), (t2, te2, sdxl_emb["clip_g"])):
            ids = t.convert_tokens_to_ids(["xlemb", "xlemb_1"])
            assert torch.equal(encoder.get_input_embeddings()(torch.tensor(ids)), want)
        # a single-set embedding goes to the first encoder only
        assert "oldemb" in t1.get_added_vocab() and "oldemb" not in t2.get_added_vocab()
        assert torch.equal(
            te1.get_input_embeddings()(torch.tensor(t1.convert_tokens_to_ids(["oldemb"]))), sd1_emb["emb_params"]
        )
    assert (te1.get_input_embeddings(), te2.get_input_embeddings()) == originals
    with textual_inversions([(tok, te1), (tok_2, te2)], [("oldemb", sd1_emb)]) as (t1, t2):
        assert t1 is not tok and t2 is tok_2  # nothing to add to the second: the cached one is used


def test_width_mismatch_is_named(tok: Any, te: Any):
    with pytest.raises(ServiceInputError, match=r"'wide' is 32 wide but text encoder 1 takes 16"):
        enter([(tok, te)], [("wide", {"emb_params": vectors(2, width=32)})])
    with pytest.raises(ServiceInputError, match="SDXL embedding"):
        enter([(tok, te)], [("xl", {"clip_l": vectors(1), "clip_g": vectors(1)})])
    assert te.get_input_embeddings().num_embeddings == F.TINY_VOCAB


@pytest.mark.parametrize("trigger", ["a", "<|endoftext|>"])
def test_trigger_already_a_token_is_refused(tok: Any, te: Any, trigger: str):
    with pytest.raises(ServiceInputError, match="already a token"):
        enter([(tok, te)], [(trigger, {"emb_params": vectors(1)})])


def test_bad_embeddings_are_refused(tok: Any, te: Any):
    emb = {"emb_params": vectors(1)}
    with pytest.raises(ServiceInputError, match="given twice"):
        enter([(tok, te)], [("twice", emb), ("twice", emb)])
    with pytest.raises(ServiceInputError, match="none of emb_params"):
        enter([(tok, te)], [("odd", {"string_to_param": vectors(1)})])
    with pytest.raises(ServiceInputError, match="non-empty word"):
        enter([(tok, te)], [(" spaced ", emb)])


def test_tokenizer_copies_are_reused_and_encoder_locked(tok: Any, te: Any):
    import threading

    emb = [("reuse", {"emb_params": vectors(2)})]
    with textual_inversions([(tok, te)], emb) as (first,):
        results: list[bool] = []
        t = threading.Thread(target=lambda: results.append(module_lock(te).acquire(blocking=False)))
        t.start()
        t.join()
        assert results == [False]
    with textual_inversions([(tok, te)], emb) as (second,):
        pass
    assert first is second and len(tok) == F.TINY_VOCAB


def test_expand_prompt_whole_words_only(tok: Any, te: Any):
    with textual_inversions(
        [(tok, te)], [("emb", {"emb_params": vectors(2)}), ("one", {"emb_params": vectors(1)})]
    ) as (t,):
        text = "emb, embedded emb_1 one (emb:1.2)"
        assert expand_prompt(text, t, ["emb", "one"]) == "emb emb_1, embedded emb_1 one (emb emb_1:1.2)"


def test_embedding_from_the_depot(tmp_path: Path, tok: Any, te: Any):
    from modeldepot import ModelManager

    path = F.tiny_textual_inversion(tmp_path / "a1111-emb.pt", vectors=2)
    with ModelManager.open(home=tmp_path / "home") as mm:
        key = mm.install.register_path(path)
        state = mm.load_model_by_key(key).model
    with textual_inversions([(tok, te)], [("a1111-emb", state)]) as (t,):
        ids = t.convert_tokens_to_ids(["a1111-emb", "a1111-emb_1"])
        assert torch.equal(te.get_input_embeddings()(torch.tensor(ids)), state["emb_params"].float())
