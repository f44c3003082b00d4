"""register / list / show / rename / tag / rm from the command line, as a user would."""

from __future__ import annotations

import re
import time
from datetime import datetime
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


def _register(run, path: Path, name: str, seed: int) -> str:  # type: ignore[no-untyped-def]
    factories.write_sd1_checkpoint(path, seed=seed)
    r = run("register", str(path), "--name", name, "--json")
    assert r.code == 0, r.err
    key: str = r.json()["key"]
    return key


def test_rename_to_a_taken_name_is_refused_naming_the_other_key(home: Path, tmp_path: Path, run) -> None:
    first = _register(run, tmp_path / "one.safetensors", "one", seed=1)
    second = _register(run, tmp_path / "two.safetensors", "two", seed=2)
    r = run("rename", second, "one")
    assert r.code == 1 and first in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert run("show", second, "--json").json()["name"] == "two"


def test_tags_are_case_insensitive(home: Path, tmp_path: Path, run) -> None:
    key = _register(run, tmp_path / "m.safetensors", "m", seed=1)
    assert run("tag", "add", "m", "Portrait").code == 0
    r = run("tag", "add", "m", "portrait", "PORTRAIT", "Fav")
    assert r.code == 0, r.err
    assert run("show", key, "--json").json()["tags"] == ["Portrait", "Fav"]  # the first spelling is kept
    assert [m["key"] for m in run("list", "--tag", "PORTRAIT", "--json").json()] == [key]
    assert [m["key"] for m in run("list", "--tag", "portrait", "--tag", "fav", "--json").json()] == [key]
    assert run("tag", "rm", "m", "FAV").code == 0
    assert run("show", key, "--json").json()["tags"] == ["Portrait"]


def test_show_prints_times_as_iso_8601(home: Path, tmp_path: Path, run) -> None:
    key = _register(run, tmp_path / "m.safetensors", "m", seed=1)
    shown = run("show", key, "--json").json()
    for field in ("created_at", "updated_at"):
        when = datetime.fromisoformat(shown[field])
        assert when.tzinfo is not None, shown[field]
        assert abs(when.timestamp() - time.time()) < 3600, shown[field]
    listed = run("list", "--json").json()[0]
    assert listed["created_at"] == shown["created_at"]
    table = run("show", key).out
    line = next(ln for ln in table.splitlines() if ln.strip().startswith("created_at"))
    assert datetime.fromisoformat(line.split()[1]).tzinfo is not None, line
    assert not re.search(r"\b\d{9,}\.\d+\b", table), table  # no epoch floats anywhere


def test_key_prefixes_work_where_keys_do(home: Path, tmp_path: Path, run) -> None:
    key = _register(run, tmp_path / "m.safetensors", "m", seed=1)
    assert run("show", key[:6], "--json").json()["key"] == key
    assert run("show", key[:6].upper(), "--json").json()["key"] == key
    assert run("tag", "add", key[:8], "x").code == 0
    short = run("show", key[:5])
    assert short.code == 1 and "at least 6 characters" in short.err
    # Two keys sharing a prefix: the prefix is refused, listing both.
    from modeldepot import ModelManager

    with ModelManager.open(home=home) as mm:
        for i, k in enumerate(("fedcba01" + "0" * 24, "fedcba02" + "0" * 24)):
            mm.store.add_model(
                {"key": k, "name": f"twin{i}", "type": "lora", "format": "lycoris", "base": "sd-1", "path": f"/x/{i}"}
            )
    r = run("show", "fedcba")
    assert r.code == 1 and "fedcba01" in r.err and "fedcba02" in r.err and len(r.err.strip().splitlines()) == 1
    assert run("show", "fedcba02", "--json").json()["name"] == "twin1"
    assert run("rename", "fedcba01", "renamed").code == 0
    assert run("rm", "fedcba02", "--keep-files").code == 0
    assert sorted(m["name"] for m in run("list", "--json").json()) == ["m", "renamed"]


def test_list_fits_80_columns_one_line_per_model(home: Path, tmp_path: Path, run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    long_name = "an-extraordinarily-long-model-name-that-could-never-fit-in-a-narrow-terminal-v1"
    keys = [
        _register(run, tmp_path / "a.safetensors", long_name, seed=1),
        _register(run, tmp_path / "b.safetensors", "short", seed=2),
    ]
    run("tag", "add", "short", "portrait", "landscape-photography", "cinematic-lighting", "favourite")
    monkeypatch.setenv("COLUMNS", "80")
    out = run("list").out
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n" + out
    rows = [line for line in lines if line[:8] in {k[:8] for k in keys}]
    assert len(rows) == 2, "\n" + out  # one line per model: nothing wrapped onto a second line
    assert not any(k in out for k in keys)  # short keys
    assert "…" in out and long_name not in out
    assert len(lines) == 2 + len(keys) + 1  # header, rule, rows, count

    wide = run("list", "--wide").out
    for key in keys:
        row = next(line for line in wide.splitlines() if key in line)  # the full key ...
        assert (long_name in row) or ("favourite" in row)  # ... and everything else on its line
    assert str(tmp_path / "a.safetensors") in wide and "…" not in wide


def test_list_at_80_columns_keeps_names_whole(home: Path, tmp_path: Path, run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from modeldepot.testing import factories

    factories.write_esrgan(tmp_path / "up.pth")  # a long type: spandrel_image_to_image
    assert run("register", str(tmp_path / "up.pth"), "--name", "realesrgan-x4plus-anime").code == 0
    _register(run, tmp_path / "a.safetensors", "dreamshaper-8-inpainting", seed=1)
    monkeypatch.setenv("COLUMNS", "80")
    out = run("list").out
    assert all(len(line) <= 80 for line in out.splitlines()), "\n" + out
    # The format column gives way so that names of this length stay whole.
    assert "realesrgan-x4plus-anime" in out and "dreamshaper-8-inpainting" in out, "\n" + out
    assert "format" not in out.splitlines()[0]
    assert "format" in run("list", "--wide").out.splitlines()[0]


def test_bad_setting_is_one_line_and_exit_1(home: Path, run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MODELDEPOT_REMOTE_API_TOKENS", "not json")
    r = run("list")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1, r.err
    assert "remote_api_tokens" in r.err and "MODELDEPOT_REMOTE_API_TOKENS" in r.err and "JSON" in r.err
    monkeypatch.delenv("MODELDEPOT_REMOTE_API_TOKENS")
    (home / "modeldepot.yaml").write_text("max_parallel_downloads: lots\n")
    r = run("config", "show")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1, r.err
    assert "max_parallel_downloads" in r.err and "modeldepot.yaml" in r.err
