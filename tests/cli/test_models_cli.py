"""register / list / show / rename / tag / rm from the command line, as a user would."""

from __future__ import annotations

from pathlib import Path

from modeldepot.testing import factories


def test_register_list_show_rename_tag_rm(home: Path, tmp_path: Path, run) -> None:
    ckpt = tmp_path / "dreamshaper_8.safetensors"
    factories.write_sd1_checkpoint(ckpt)

    r = run("register", str(ckpt), "--name", "dreamshaper", "--json")
    assert r.code == 0, r.err
    rec = r.json()
    assert (rec["name"], rec["type"], rec["base"], rec["format"]) == ("dreamshaper", "main", "sd-1", "checkpoint")
    assert rec["inplace"] is True and rec["hash"].startswith("blake3:")
    key = rec["key"]

    listed = run("list", "--json").json()
    assert [m["key"] for m in listed] == [key]
    assert run("list", "--base", "sdxl", "--json").json() == []
    assert run("list", "--type", "main", "--base", "sd-1", "--json").json()[0]["name"] == "dreamshaper"

    shown = run("show", "dreamshaper", "--json").json()
    assert shown["key"] == key and shown["files_present"] is True

    assert run("rename", key, "dreamshaper-8").code == 0
    assert run("tag", "add", "dreamshaper-8", "portrait", "fav").code == 0
    assert run("tag", "rm", "dreamshaper-8", "fav").code == 0
    shown = run("show", key, "--json").json()
    assert shown["name"] == "dreamshaper-8" and shown["tags"] == ["portrait"]
    assert run("list", "--tag", "portrait", "--json").json()[0]["key"] == key
    assert run("list", "--tag", "fav", "--json").json() == []

    # A table for people.
    table = run("list")
    assert "dreamshap" in table.out and "sd-1" in table.out and "1 model(s)" in table.out

    r = run("rm", key)
    assert r.code == 0, r.err
    assert ckpt.exists(), "removing an in-place model must not delete the user's file"
    assert run("list", "--json").json() == []


def test_overrides_win_and_duplicates_are_refused(home: Path, tmp_path: Path, run) -> None:
    ckpt = tmp_path / "m.safetensors"
    factories.write_sd1_checkpoint(ckpt)
    rec = run("register", str(ckpt), "--base", "sd-2", "--json").json()
    assert rec["base"] == "sd-2"
    again = run("register", str(ckpt))
    assert again.code == 1
    assert "already registered" in again.err and len(again.err.strip().splitlines()) == 1


def test_user_errors_are_one_line(home: Path, tmp_path: Path, run) -> None:
    r = run("register", str(tmp_path / "nope.safetensors"))
    assert r.code == 1 and "nope.safetensors" in r.err and "Traceback" not in r.err
    r = run("show", "no-such-model")
    assert r.code == 1 and "no-such-model" in r.err
    r = run("list", "--base", "sd-9")
    assert r.code == 2 and "sd-9" in r.err
    r = run("rm", "0" * 32)
    assert r.code == 1


def test_show_says_when_file_is_missing(home: Path, tmp_path: Path, run) -> None:
    ckpt = tmp_path / "gone.safetensors"
    factories.write_sd1_checkpoint(ckpt)
    key = run("register", str(ckpt), "--json").json()["key"]
    ckpt.unlink()
    assert run("list", "--json").json()[0]["key"] == key  # listing still works
    shown = run("show", key, "--json").json()
    assert shown["files_present"] is False
    assert "MISSING" in run("show", key).out


def test_hash_and_config_show(home: Path, tmp_path: Path, run) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    import blake3

    r = run("hash", str(f), "--json")
    assert r.json()["hash"] == "blake3:" + blake3.blake3(b"hello").hexdigest()
    cfg = run("config", "show", "--json").json()
    assert cfg["home"] == str(home) and "remote_api_tokens" in cfg
