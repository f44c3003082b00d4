"""DepotConfig: sources in priority, home resolution, derived paths, secrets never saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modeldepot.config import DepotConfig, default_home
from modeldepot.errors import ConfigurationError


def test_home_resolution_order(tmp_path: Path) -> None:
    assert default_home({"MODELDEPOT_HOME": str(tmp_path / "a"), "XDG_CACHE_HOME": "/x"}) == tmp_path / "a"
    assert default_home({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "modeldepot"
    assert default_home({}) == Path("~/.cache/modeldepot").expanduser()


def test_defaults_derive_from_home(home: Path) -> None:
    cfg = DepotConfig()
    assert cfg.home == home.resolve()
    assert cfg.models_dir == cfg.home / "models"
    assert cfg.db == str(cfg.home / "databases" / "modeldepot.db")
    assert cfg.link_modes == ["reflink", "hardlink", "symlink", "copy"]
    assert cfg.hashing_algorithm == "blake3" and cfg.allow_private_urls is False
    assert cfg.max_parallel_downloads == 5 and cfg.device == "auto" and cfg.precision == "auto"


def test_priority_args_over_env_over_yaml_over_defaults(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "modeldepot.yaml").write_text(
        yaml.safe_dump({"max_parallel_downloads": 3, "device": "cpu", "precision": "float16", "link_modes": ["copy"]})
    )
    monkeypatch.setenv("MODELDEPOT_DEVICE", "cuda:1")
    monkeypatch.setenv("MODELDEPOT_LINK_MODES", "hardlink,copy")
    cfg = DepotConfig(precision="bfloat16")
    assert cfg.precision == "bfloat16"  # argument beats yaml
    assert cfg.device == "cuda:1"  # env beats yaml
    assert cfg.link_modes == ["hardlink", "copy"]  # env list as comma string
    assert cfg.max_parallel_downloads == 3  # yaml beats default


def test_home_argument_selects_its_yaml(tmp_path: Path, home: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "modeldepot.yaml").write_text("max_parallel_downloads: 9\n")
    assert DepotConfig(home=other).max_parallel_downloads == 9
    assert DepotConfig().max_parallel_downloads == 5


def test_bad_values_are_clear(home: Path) -> None:
    with pytest.raises(ConfigurationError, match="device"):
        DepotConfig.load(device="gpu")
    with pytest.raises(ConfigurationError, match="hashing_algorithm"):
        DepotConfig.load(hashing_algorithm="md99")
    (home / "modeldepot.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigurationError, match="mapping"):
        DepotConfig.load()
    (home / "modeldepot.yaml").write_text("nonsense_setting: 1\n")
    with pytest.raises(ConfigurationError, match="nonsense_setting"):
        DepotConfig.load()
    (home / "modeldepot.yaml").write_text("a: [unclosed\n")
    with pytest.raises(ConfigurationError, match="YAML"):
        DepotConfig.load()


def test_tokens_never_saved_or_shown(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPOT_REMOTE_API_TOKENS", '[{"url_regex": "civitai\\\\.com", "token": "sekrit-123"}]')
    cfg = DepotConfig(api_key="key-456")
    assert cfg.token_for("https://civitai.com/api/download/models/1") == "sekrit-123"
    assert cfg.token_for("https://huggingface.co/x") is None
    assert "sekrit-123" not in repr(cfg) and "key-456" not in repr(cfg)
    path = cfg.save()
    text = path.read_text()
    assert "sekrit" not in text and "key-456" not in text and "remote_api_tokens" not in text
    # A token put in the file by hand is ignored, never echoed back.
    path.write_text(text + "remote_api_tokens:\n- {url_regex: x, token: hand-written}\n")
    monkeypatch.delenv("MODELDEPOT_REMOTE_API_TOKENS")
    assert DepotConfig().remote_api_tokens == []


def test_unparsable_env_json_is_one_line_naming_the_setting_not_the_value(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDEPOT_REMOTE_API_TOKENS", "not json sekrit-123")
    for build in (DepotConfig, DepotConfig.load):
        with pytest.raises(ConfigurationError) as info:
            build()
        message = str(info.value)
        assert "remote_api_tokens" in message and "MODELDEPOT_REMOTE_API_TOKENS" in message
        assert "not valid JSON" in message and "\n" not in message
        assert '[{"host": "civitai.com", "token": "..."}]' in message
        assert "sekrit" not in message and info.value.__cause__ is None


def test_invalid_values_name_setting_and_source_without_echoing_secrets(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mapping where a list belongs: pydantic's own message would quote the token.
    monkeypatch.setenv("MODELDEPOT_REMOTE_API_TOKENS", '{"url_regex": "x", "token": "sekrit-456"}')
    with pytest.raises(ConfigurationError) as info:
        DepotConfig()
    assert str(info.value).startswith("invalid setting remote_api_tokens (MODELDEPOT_REMOTE_API_TOKENS): ")
    assert "sekrit" not in str(info.value) and info.value.__cause__ is None
    monkeypatch.delenv("MODELDEPOT_REMOTE_API_TOKENS")

    monkeypatch.setenv("MODELDEPOT_DEVICE", "gpu")
    (home / "modeldepot.yaml").write_text("max_parallel_downloads: 0\n")
    with pytest.raises(ConfigurationError) as info:
        DepotConfig(precision="float8")
    message = str(info.value)
    assert "\n" not in message
    assert "invalid setting device (MODELDEPOT_DEVICE): device 'gpu' must be" in message
    assert f"invalid setting max_parallel_downloads (in {home / 'modeldepot.yaml'}): " in message
    assert "invalid setting precision (argument): " in message


def test_broken_settings_file_is_one_line_without_its_content(home: Path) -> None:
    (home / "modeldepot.yaml").write_text("device: cpu  # sekrit-789\nlink_modes: [copy\n")
    with pytest.raises(ConfigurationError) as info:
        DepotConfig()
    message = str(info.value)
    assert str(home / "modeldepot.yaml") in message and "YAML" in message and "line 3" in message
    assert "\n" not in message and "sekrit" not in message


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("s3://AKIAEXAMPLE:wJalrXUtnFEMI@models", "credentials do not belong"),
        ("https://models.s3.amazonaws.com/x", "does not start with s3://"),
        ("s3://Models_Bucket/x", "not a valid S3 bucket name"),
        ("s3://models/x?X-Amz-Signature=deadbeef", "no ?query"),
    ],
)
def test_blob_remote_refusals_name_the_setting_and_never_echo_secrets(tmp_path: Path, value: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match="blob_remote") as caught:
        DepotConfig(home=tmp_path, blob_remote=value)
    assert says in str(caught.value)
    for secret in ("wJalrXUtnFEMI", "deadbeef", "AKIAEXAMPLE"):
        assert secret not in str(caught.value)


def test_blob_remote_is_normalised_and_the_endpoint_checked(tmp_path: Path) -> None:
    config = DepotConfig(home=tmp_path, blob_remote=" s3://models//fleet/a/ ", local_cache_gb=50)
    assert config.blob_remote == "s3://models/fleet/a"
    assert DepotConfig(home=tmp_path, blob_remote="s3://models").blob_remote == "s3://models"
    assert DepotConfig(home=tmp_path).blob_remote is None
    with pytest.raises(ConfigurationError, match="blob_remote_endpoint"):
        DepotConfig(home=tmp_path, blob_remote_endpoint="http://user:pw@minio.lan:9000")
    with pytest.raises(ConfigurationError, match="local_cache_gb"):
        DepotConfig(home=tmp_path, local_cache_gb=-1)
