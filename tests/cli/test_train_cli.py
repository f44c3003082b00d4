"""`modeldepot train lora | dreambooth`: the dry-run plan, a real run that installs the LoRA, one-line errors,
and Ctrl-C of a real process saving a checkpoint that `--resume` continues."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402
from modeldepot.testing.factories import write_captioned_images, write_clip_model_folder  # noqa: E402

Run = Callable[..., Any]
TINY = ("--resolution", "32", "--lr", "1e-3", "--quiet")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("train-cli")
    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELDEPOT_")}
    for name in saved:  # the module fixture runs before the autouse clean environment
        del os.environ[name]
    try:
        with ModelManager.open(home=d / "home") as mm:
            mm.install.install_path(F.tiny_sd_pipeline(d / "tiny-sd"), {"name": "tiny-sd", "base": "sd-1"})
            mm.install.install_path(write_clip_model_folder(d / "tiny-clip"), {"name": "tiny-clip"})
    finally:
        os.environ.update(saved)
    yield d / "home"


@pytest.fixture
def cli(run: Run, home: Path) -> Run:
    def _cli(*args: str | Path) -> Any:
        return run("train", *map(str, args), "--home", str(home))

    return _cli


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_captioned_images(tmp_path_factory.mktemp("data") / "photos", 4, size=32)


def test_dry_run_prints_the_plan_and_trains_nothing(cli: Run, data: Path, home: Path) -> None:
    r = cli("lora", "-b", "tiny-sd", "-d", data, "--steps", "10", "--rank", "8", "-o", "planned", "--dry-run", *TINY)
    assert r.code == 0, r.err
    assert "train lora 'planned' on tiny-sd (sd-1" in r.out
    assert "steps 10, batch 1, 4 samples per epoch -> 3 epoch(s); resolution 32; buckets 32x32 x4" in r.out
    assert re.search(r"LoRA rank 8, alpha 4: [\d,]+ trainable parameters \(unet only\)", r.out)
    assert re.search(r"memory \(estimate, float32\): [\d.]+ [KMG]iB = weights", r.out)
    assert str(home / "train" / "planned") in r.out.replace("\n", "")
    assert not (home / "train" / "planned").exists()
    r = cli("lora", "-b", "tiny-sd", "-d", data, "--steps", "10", "--dry-run", "--json", *TINY)
    plan = json.loads(r.out)
    assert plan["output_name"] == "tiny-sd-lora" and plan["epochs"] == 3 and plan["trainable_parameters"] > 0
    assert plan["memory"]["total"] == sum(
        plan["memory"][k] for k in ("weights", "trained_copies", "adapters", "activations")
    )
    with ModelManager.open(home=home) as mm:
        assert not mm.store.search_by_attr(type="lora")


def test_dry_run_counts_the_parameters_training_makes(cli: Run, data: Path, home: Path) -> None:
    args = ("lora", "-b", "tiny-sd", "-d", data, "--steps", "2", "--text-encoder", "-o", "counted", *TINY)
    planned = json.loads(cli(*args, "--dry-run", "--json").out)["trainable_parameters"]
    r = cli(*args, "--json")
    assert r.code == 0, r.err
    record = json.loads(r.out)
    trained = load_file(record["path"])
    assert planned == sum(t.numel() for k, t in trained.items() if not k.endswith(".alpha"))


def test_train_lora_installs_and_prints_the_record(cli: Run, run: Run, data: Path, home: Path) -> None:
    r = cli("lora", "-b", "tiny-sd", "-d", data, "--steps", "2", "-o", "cli-style", *TINY)
    assert r.code == 0, r.err
    assert re.fullmatch(r"installed lora 'cli-style' \(sd-1, key [0-9a-f]{32}\) at \S+\.safetensors\n", r.out)
    listed = run("list", "--json", "--home", str(home))
    assert any(m["name"] == "cli-style" and m["type"] == "lora" for m in json.loads(listed.out))


def test_dreambooth_dry_run_counts_class_images(cli: Run, data: Path) -> None:
    r = cli("dreambooth", "-b", "tiny-sd", "-d", data, "--instance-prompt", "sks cat", "--class-prompt", "a cat",
            "--num-class-images", "3", "--dry-run", *TINY)  # fmt: skip
    assert r.code == 0, r.err
    assert "train dreambooth 'tiny-sd-dreambooth'" in r.out and "class images to generate first: 3" in r.out


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_errors_are_one_line(cli: Run, data: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    write_captioned_images(bare, 2, caption_ext=None)
    r = cli("lora", "-b", "tiny-sd", "-d", bare, "--steps", "1", *TINY)
    assert r.code == 1 and "--caption-ext" in _one_line(r.err) and "--default-caption" in r.err
    r = cli("lora", "-b", "tiny-sd", "-d", tmp_path / "nowhere", "--steps", "1", *TINY)
    assert r.code == 1 and "nowhere" in _one_line(r.err)
    r = cli("lora", "-b", "no-such-model", "-d", data, "--steps", "1", *TINY)
    assert r.code == 1 and "no-such-model" in _one_line(r.err)
    r = cli("lora", "-b", "tiny-sd", "-d", data, "--steps", "1", "--mixed-precision", "fp16", *TINY)
    assert r.code == 1 and "fp16 mixed precision needs a CUDA device" in _one_line(r.err)
    r = cli("dreambooth", "-b", "tiny-sd", "-d", data, "--instance-prompt", "sks", "--steps", "1", *TINY)
    assert r.code == 1 and "needs class_prompt" in _one_line(r.err)


def test_ctrl_c_of_a_real_process_saves_a_checkpoint_and_resume_finishes(
    home: Path, data: Path, tmp_path: Path
) -> None:
    args = [sys.executable, "-m", "modeldepot", "train", "lora", "-b", "tiny-sd", "-d", str(data), "-o", "stopped",
            "--home", str(home), "--checkpoint-every", "1", *TINY]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPOT_")}
    proc = subprocess.Popen(
        [*args, "--steps", "100000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = home / "train" / "stopped" / "checkpoints" / "step-000001"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the first checkpoint, the sign training is under way
    assert first.exists(), proc.communicate(timeout=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = _one_line(err)
    match = re.search(r"checkpoint saved to (\S+): continue with --resume (\S+)$", line)
    assert match and match.group(1) == match.group(2), line
    step = int(json.loads((Path(match.group(1)) / "state.json").read_text())["step"])
    assert step >= 1
    done = subprocess.run([*args, "--steps", str(step + 2), "--resume", "latest"], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "installed lora 'stopped'" in done.stdout


def test_predictor_plan_train_and_predict(cli: Run, run: Run, home: Path, tmp_path: Path) -> None:
    from PIL import Image

    rows = ["file,rating"]
    for i in range(8):
        Image.new("RGB", (32, 32), (i * 30, 40, 200 - i * 20)).save(tmp_path / f"p{i}.png")
        rows.append(f"p{i}.png,{i / 2}")
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    args = ("predictor", "--clip", "tiny-clip", "-d", tmp_path, "--scores", tmp_path / "ratings.csv", "--epochs", "5")
    r = cli(*args, "--dry-run")
    assert r.code == 0, r.err
    assert "train predictor 'tiny-clip-predictor' on CLIP tiny-clip" in r.out
    assert "8 scored images: 7 to train on, 1 held out; 5 epochs of 1 step(s)" in r.out
    assert re.search(r"memory \(estimate\): [\d.]+ [KMG]iB = CLIP weights [\d.]+ [KMG]iB \+ 16-wide embeddings", r.out)
    r = cli(*args, "-o", "taste", "--quiet")
    assert r.code == 0, r.err
    assert re.fullmatch(r"installed clip_predictor 'taste' \(any, key [0-9a-f]{32}\) at \S+\n", r.out)
    r = run("run", "predict", "-m", "taste", "-i", str(tmp_path / "p1.png"), "-i", str(tmp_path / "p5.png"),
            "--json", "--home", str(home))  # fmt: skip
    assert r.code == 0, r.err
    scores = json.loads(r.out)
    assert list(scores) == [str(tmp_path / "p1.png"), str(tmp_path / "p5.png")]
    assert all(isinstance(v, float) for v in scores.values())
    (tmp_path / "bad.csv").write_text("file,rating\np1.png,high\n")
    r = cli("predictor", "--clip", "tiny-clip", "-d", tmp_path, "--scores", tmp_path / "bad.csv", "--dry-run")
    assert r.code == 1 and "bad.csv" in _one_line(r.err)
