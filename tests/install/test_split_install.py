"""``split_single_files``: single-file checkpoints stored as their parts, shared parts stored once,
``du`` saying what it would save beforehand, ``export`` rebuilding the original file exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldepot import ModelManager
from modeldepot.storage._blobs import hash_path
from modeldepot.testing import factories as F

np = pytest.importorskip("numpy")
safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _fine_tunes(root: Path) -> tuple[Path, Path, int]:
    """Two SD-1 checkpoints with other UNets but the same VAE and text encoder (a base and its
    fine-tune); returns them and the bytes of the shared parts."""
    a = F.write_sd1_checkpoint(root / "base.safetensors", seed=1)
    other = safetensors_numpy.load_file(str(F.write_sd1_checkpoint(root / "other.safetensors", seed=2)))
    tensors = safetensors_numpy.load_file(str(a))
    for name in tensors:
        if name.startswith("model.diffusion_model."):
            tensors[name] = other[name]
    b = root / "tune.safetensors"
    safetensors_numpy.save_file(tensors, str(b), metadata={"ss_note": "a fine-tune"})
    shared = sum(
        t.nbytes
        for n, t in tensors.items()
        if n.startswith(("first_stage_model.", "cond_stage_model.")) and t.dtype.kind == "f"
    )
    return a, b, shared


def test_du_says_what_splitting_would_save(tmp_path: Path) -> None:
    a, b, shared = _fine_tunes(tmp_path)
    with ModelManager.open(home=tmp_path / "home") as mm:
        mm.install.install_path(a)
        assert mm.storage.du().split_savings_bytes == 0  # one checkpoint: nothing shared yet
        mm.install.install_path(b)
        report = mm.storage.du()
        assert report.split_savings_bytes == shared and report.split_shared_parts == 2
        assert report.saved_bytes == 0  # the whole files differ: dedup saves nothing today


def test_split_stores_shared_parts_once_and_exports_the_original(tmp_path: Path) -> None:
    a, b, shared = _fine_tunes(tmp_path)
    with ModelManager.open(home=tmp_path / "home", split_single_files=True) as mm:
        ka = mm.install.install_path(a)
        kb = mm.install.install_path(b)
        ra, rb = mm.store.get_model(ka), mm.store.get_model(kb)
        assert (Path(ra.path) / "split.json").is_file() and str(ra.format) == "checkpoint"
        assert ra.hash == f"blake3:{hash_path(a)}" and rb.hash == f"blake3:{hash_path(b)}"
        report = mm.storage.du()
        assert report.saved_bytes >= shared and report.split_savings_bytes == 0
        # Same content again is the same model, whole file or not.
        assert mm.install.install_path(a) == ka
        vae_a = mm.normalized.get_model_by_name(ra.name, "main").parts["vae"]
        vae_b = mm.normalized.get_model_by_name(rb.name, "main").parts["vae"]
        assert vae_a.digest == vae_b.digest and vae_a.refcount == 2
        out = mm.normalized.export(ra.name, "sd-1", tmp_path / "out")
        assert out.name == f"{ra.name}.safetensors" and out.read_bytes() == a.read_bytes()
        assert mm.normalized.export(rb.name, "sd-1", tmp_path / "out").read_bytes() == b.read_bytes()


def test_split_parts_match_the_whole_files_parts(tmp_path: Path) -> None:
    """A split checkpoint's parts are the same parts as the whole file's (content, not container)."""
    a, _b, _ = _fine_tunes(tmp_path)
    with ModelManager.open(home=tmp_path / "whole") as mm:
        mm.install.install_path(a)
        whole = {k: p.digest for k, p in mm.normalized.get_model_by_name("base", "main").parts.items() if p.embedded}
    with ModelManager.open(home=tmp_path / "split", split_single_files=True) as mm:
        mm.install.install_path(a)
        split = {k: p.digest for k, p in mm.normalized.get_model_by_name("base", "main").parts.items() if p.embedded}
    assert whole == split and set(whole) == {"unet", "vae", "text_encoder"}


@pytest.mark.torch
def test_a_split_checkpoint_loads_like_the_whole_file(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    a, _b, _ = _fine_tunes(tmp_path)
    with ModelManager.open(home=tmp_path / "whole") as mm:
        mm.install.install_path(a)
        with mm.load_model_by_attr("base", "sd-1", "main", "vae") as vae:
            expected = {k: v.clone() for k, v in vae.state_dict().items()}
    with ModelManager.open(home=tmp_path / "split", split_single_files=True) as mm:
        mm.install.install_path(a)
        with mm.load_model_by_attr("base", "sd-1", "main", "vae") as vae:
            got = vae.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, equal_nan=True)


def test_reidentifying_a_split_checkpoint_keeps_what_it_is(tmp_path: Path) -> None:
    a, _b, _ = _fine_tunes(tmp_path)
    with ModelManager.open(home=tmp_path / "home", split_single_files=True) as mm:
        key = mm.install.install_path(a)
        before = mm.store.get_model(key)
        after = mm.install.reidentify(key)
        assert (str(after.type), str(after.format), str(after.base)) == ("main", "checkpoint", "sd-1")
        assert (after.type, after.base, after.variant) == (before.type, before.base, before.variant)


def test_split_move_mode_takes_the_source_also_for_known_content(tmp_path: Path) -> None:
    a, _b, _ = _fine_tunes(tmp_path)
    with ModelManager.open(home=tmp_path / "home", split_single_files=True) as mm:
        first = tmp_path / "first.safetensors"
        first.write_bytes(a.read_bytes())
        key = mm.install.install_path(first, move=True)
        assert not first.exists()
        again = tmp_path / "again.safetensors"
        again.write_bytes(a.read_bytes())
        assert mm.install.install_path(again, move=True) == key and not again.exists()
        assert mm.normalized.export_record(mm.store.get_model(key), tmp_path / "out").read_bytes() == a.read_bytes()
