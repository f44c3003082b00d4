from __future__ import annotations

from pathlib import Path

from modeldepot.testing import factories


def test_identify_json_explain_and_errors(tmp_path: Path, run) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    data = run("identify", str(lora), "--json").json()
    assert (data["type"], data["format"], data["base"]) == ("lora", "lycoris", "sdxl")
    assert data["reasons"]
    explained = run("identify", str(lora), "--explain")
    assert explained.code == 0 and "sdxl" in explained.out and len(explained.out.splitlines()) > 3
    plain = run("identify", str(lora))
    assert plain.code == 0 and plain.out.startswith("lora / lycoris / sdxl")
    bad = factories.write_bad_safetensors(tmp_path / "bad.safetensors", "header_longer_than_file")
    r = run("identify", str(bad))
    assert r.code == 1 and "bad.safetensors" in r.err and "Traceback" not in r.err
