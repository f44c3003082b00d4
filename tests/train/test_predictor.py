"""The CLIP+MLP predictor over a tiny random CLIP: prepare (embeddings of scored images, every score-file
error), train (loss falls, seeded runs repeat, the record is a clip_predictor), predict, and LAION's
released layout (.pth) identified, loaded and run with ``clip=``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.configs import ClipPredictorCheckpointConfig  # noqa: E402
from modeldepot.errors import (  # noqa: E402
    ServiceInputError,
    TrainingDataError,
    TrainingError,
    UnknownModelException,
    WrongModelTypeError,
)
from modeldepot.identify import identify, read_safetensors_header  # noqa: E402
from modeldepot.services.clip import ClipEmbedder  # noqa: E402
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelSourceType, ModelType  # noqa: E402
from modeldepot.testing.factories import write_clip_model_folder  # noqa: E402
from modeldepot.train.predictor import (  # noqa: E402
    ClipPredictor,
    PredictorMLP,
    PreparedScores,
    predict,
    prepare,
    train_predictor,
)
from modeldepot.train.predictor.train import validation_size  # noqa: E402

pytestmark = pytest.mark.torch

EPOCHS = 30
#: Colours of the training images; a score is the image's red channel on a 0-10 scale.
COLOURS = [((i * 23) % 256, (255 - i * 19) % 256, (i * 53) % 256) for i in range(12)]


def _score(colour: tuple[int, int, int]) -> float:
    return round(colour[0] / 25.5, 3)


def _write_images(folder: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), COLOURS[i % len(COLOURS)]).save(folder / name)


@pytest.fixture(scope="module")
def clip_key(depot: ModelManager, tmp_path_factory: pytest.TempPathFactory) -> str:
    return depot.install.register_path(write_clip_model_folder(tmp_path_factory.mktemp("models") / "clip"))


@pytest.fixture(scope="module")
def embedder(depot: ModelManager, clip_key: str) -> ClipEmbedder:
    return ClipEmbedder.from_key(depot, clip_key)


@pytest.fixture(scope="module")
def rated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rated")
    names = [f"img{i:02d}.png" for i in range(len(COLOURS))]
    _write_images(folder, names)
    lines = ["image,score", *(f"{n},{_score(c)}" for n, c in zip(names, COLOURS, strict=True))]
    (folder / "scores.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def prepared(depot: ModelManager, clip_key: str, rated: Path) -> PreparedScores:
    return prepare(depot, clip=clip_key, data=rated)


@pytest.fixture(scope="module")
def trained(depot: ModelManager, prepared: PreparedScores) -> tuple[Any, list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []
    record = train_predictor(depot, data=prepared, epochs=EPOCHS, seed=0, progress=lambda *a: calls.append(a))
    return record, calls


# -- prepare ---------------------------------------------------------------------------------------
def test_prepare_writes_embeddings_scores_and_the_clip(
    depot: ModelManager, clip_key: str, rated: Path, prepared: PreparedScores, embedder: ClipEmbedder
) -> None:
    clip = depot.store.get_model(clip_key)
    assert prepared.path == depot.config.home / "train" / "predictor" / f"clip-{rated.name}.safetensors"
    assert (prepared.count, prepared.dim, prepared.clip_key) == (12, embedder.dim, clip_key)
    assert (prepared.clip_name, prepared.clip_hash) == (clip.name, clip.hash)
    assert PreparedScores.open(prepared.path) == prepared
    embeddings, scores = prepared.load()
    assert embeddings.dtype == scores.dtype == torch.float32
    assert tuple(embeddings.shape) == (12, embedder.dim) and tuple(scores.shape) == (12,)
    assert scores.tolist() == pytest.approx([_score(c) for c in COLOURS])
    # Row 3 is the CLIP embedding of image 3 (unit length).
    expected = embedder.image(Image.open(rated / "img03.png"))[0]
    assert torch.allclose(embeddings[3], torch.from_numpy(expected), atol=1e-5)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(12), atol=1e-5)
    meta = read_safetensors_header(prepared.path).metadata
    assert meta["predictor.clip_key"] == clip_key and meta["predictor.clip_name"] == "clip"
    assert json.loads(meta["predictor.images"]) == prepared.image_names() == [f"img{i:02d}.png" for i in range(12)]
    assert not list(prepared.path.parent.glob(".*.tmp")), "the temp file of the atomic write is left behind"


def test_prepare_score_file_elsewhere_other_column_names_subfolders(
    depot: ModelManager, clip_key: str, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    _write_images(folder, ["a/one.png", "two.png"])
    csv = tmp_path / "ratings.csv"
    csv.write_text("\ufeffId, File ,Rating\n1,a/one.png,2.5\n\n2,two.png,-1e0\n")  # BOM, spaces, a blank line
    out = tmp_path / "out" / "prepared.safetensors"
    got = prepare(depot, clip="clip", data=folder, scores=csv, output=out, batch_size=1)
    assert got.path == out and got.count == 2
    assert got.load()[1].tolist() == [2.5, -1.0]
    assert got.image_names() == ["a/one.png", "two.png"]


def _data(tmp_path: Path, csv: str | None, images: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    _write_images(folder, list(images))
    if csv is not None:
        (folder / "scores.csv").write_text(csv)
    return folder


@pytest.mark.parametrize(
    ("csv", "needles", "at"),
    [
        (None, ["score file not found", "scores="], "scores.csv"),
        ("", ["empty", "header row"], "scores.csv"),
        (
            "name,value\na.png,1\n",
            ["no an image column (image, file, filename, path)", "no a score column", "'name', 'value'"],
            "scores.csv",
        ),
        ("image,stars\na.png,1\n", ["no a score column (score, rating, aesthetic, label)", "'stars'"], "scores.csv"),
        ("image,score\na.png,1\nb.png,abc\n", ["line 3", "'abc'", "'b.png'", "is not a number"], "scores.csv"),
        ("image,score\na.png,nan\nb.png,1\n", ["line 2", "'nan'", "not a finite number"], "scores.csv"),
        ("image,score\na.png,1\nb.png,-inf\n", ["line 3", "'-inf'", "not a finite number"], "scores.csv"),
        ("image,score\na.png,1\ngone.png,2\n", ["line 3", "image 'gone.png' is not in"], "gone.png"),
        ("image,score\na.png,1\n/etc/hosts,2\n", ["line 3", "'/etc/hosts'", "must be relative"], "scores.csv"),
        ("image,score\n../outside.png,1\nb.png,2\n", ["line 2", "'../outside.png'", "no '..'"], "scores.csv"),
        ("image,score\na.png,1\n", ["1 scored image;", "at least 2"], "scores.csv"),
        ("image,score\na.png\nb.png,1\n", ["line 2", "1 columns, the header has 2"], "scores.csv"),
        ("image,score\n,1\nb.png,1\n", ["line 2", "image name is empty"], "scores.csv"),
    ],
)
def test_score_file_errors(
    depot: ModelManager, clip_key: str, tmp_path: Path, csv: str | None, needles: list[str], at: str
) -> None:
    folder = _data(tmp_path, csv)
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")  # exists: refused for the path, not as missing
    with pytest.raises(TrainingDataError) as info:
        prepare(depot, clip=clip_key, data=folder, output=tmp_path / "out.safetensors")
    message = str(info.value)
    assert all(n in message for n in needles), message
    assert "\n" not in message
    assert info.value.path is not None and info.value.path.name == at
    assert not (tmp_path / "out.safetensors").exists()


def test_unreadable_image_names_file_and_line(depot: ModelManager, clip_key: str, tmp_path: Path) -> None:
    folder = _data(tmp_path, "image,score\na.png,1\nbroken.png,2\n")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(TrainingDataError, match=r"line 3: image 'broken.png' cannot be read") as info:
        prepare(depot, clip=clip_key, data=folder, output=tmp_path / "out.safetensors")
    assert info.value.path == folder / "broken.png"
    assert not (tmp_path / "out.safetensors").exists()


def test_prepare_refuses_a_missing_folder_and_a_bad_batch_size(
    depot: ModelManager, clip_key: str, tmp_path: Path
) -> None:
    with pytest.raises(TrainingDataError, match="no such folder of training images"):
        prepare(depot, clip=clip_key, data=tmp_path / "nowhere")
    with pytest.raises(TrainingError, match="batch_size"):
        prepare(depot, clip=clip_key, data=tmp_path, batch_size=0)


# -- train -----------------------------------------------------------------------------------------
def test_training_loss_falls_and_is_recorded(trained: tuple[Any, list[tuple[Any, ...]]]) -> None:
    record, calls = trained
    assert [c[:2] for c in calls] == [(e, EPOCHS) for e in range(1, EPOCHS + 1)]
    train_losses = [c[2] for c in calls]
    val_losses = [c[3] for c in calls]
    assert train_losses[-1] < train_losses[0] / 4
    assert all(isinstance(v, float) for v in val_losses)  # 12 rows: one held out
    meta = read_safetensors_header(record.path).metadata
    history = json.loads(meta["predictor.loss_history"])
    assert history == {"train": pytest.approx(train_losses), "val": pytest.approx(val_losses)}
    assert float(meta["predictor.train_loss"]) == pytest.approx(train_losses[-1])
    assert float(meta["predictor.val_loss"]) == pytest.approx(val_losses[-1])
    assert (meta["predictor.train_rows"], meta["predictor.val_rows"]) == ("11", "1")


def test_trained_record_is_a_clip_predictor(
    depot: ModelManager, clip_key: str, prepared: PreparedScores, trained: tuple[Any, list[tuple[Any, ...]]]
) -> None:
    record = trained[0]
    assert isinstance(record, ClipPredictorCheckpointConfig)
    assert (record.type, record.format, record.base) == (ModelType.ClipPredictor, ModelFormat.Checkpoint, "any")
    assert record.name == "clip-predictor" and record.architecture == "CLIP+MLP predictor"
    assert record.source == f"train:predictor:{prepared.path}" and record.source_type == ModelSourceType.External
    assert record.identification is not None and record.identification["extra"]["embedding_dim"] == prepared.dim
    assert "trained on 12 scored images" in (record.description or "")
    meta = read_safetensors_header(record.path).metadata
    assert meta["modelspec.sai_model_spec"] == "1.0.0" and meta["modelspec.title"] == "clip-predictor"
    assert meta["modelspec.date"].startswith("20")
    assert (meta["predictor.clip_key"], meta["predictor.embedding_dim"]) == (clip_key, str(prepared.dim))
    assert meta["predictor.epochs"] == str(EPOCHS) and float(meta["predictor.lr"]) == 1e-3
    loaded = depot.load_model_by_key(record.key)
    assert isinstance(loaded.model, PredictorMLP) and loaded.model.input_size == prepared.dim
    assert not loaded.model.training
    assert not list(depot.config.tmp_dir.glob("train-predictor-*")), "the training scratch folder is left behind"


def test_predict_scores_images_through_clip_and_mlp(
    depot: ModelManager, trained: tuple[Any, list[tuple[Any, ...]]], embedder: ClipEmbedder, rated: Path
) -> None:
    record = trained[0]
    image = Image.open(rated / "img05.png")
    score = predict(depot, record.key, image)
    assert isinstance(score, float)
    mlp = depot.load_model_by_key(record.key).model
    with torch.no_grad():
        expected = float(mlp(torch.from_numpy(embedder.image(image)))[0, 0])
    assert score == pytest.approx(expected, abs=1e-5)
    predictor = ClipPredictor.from_key(depot, record.name)
    images = [Image.open(rated / f"img{i:02d}.png") for i in range(12)]
    scores = predictor.predict(images)
    assert scores[5] == pytest.approx(score, abs=1e-5) and predictor(images[5]) == pytest.approx(score, abs=1e-5)
    # Fitted: the predictions follow the targets (Pearson correlation over the training images).
    targets = [_score(c) for c in COLOURS]
    assert _correlation(scores, targets) > 0.8
    with pytest.raises(ServiceInputError, match="list of PIL images"):
        predictor.predict(images[0])  # type: ignore[arg-type]


def _correlation(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def _weights(depot: ModelManager, key: str) -> dict[str, Any]:
    return {k: v.clone() for k, v in depot.load_model_by_key(key).model.state_dict().items()}


def test_same_seed_same_weights(depot: ModelManager, prepared: PreparedScores) -> None:
    rng = torch.random.get_rng_state()
    a = train_predictor(depot, data=prepared.path, output_name="det-a", epochs=4, seed=7)
    b = train_predictor(depot, data=prepared.path, output_name="det-b", epochs=4, seed=7)
    c = train_predictor(depot, data=prepared.path, output_name="det-c", epochs=4, seed=8)
    assert torch.equal(rng, torch.random.get_rng_state()), "training used torch's global generator"
    assert len({a.key, b.key, c.key}) == 3
    wa, wb, wc = _weights(depot, a.key), _weights(depot, b.key), _weights(depot, c.key)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["layers.0.weight"], wc["layers.0.weight"])


def test_validation_split_sizes() -> None:
    assert [validation_size(n, 0.1) for n in (2, 4, 5, 12, 40)] == [0, 0, 1, 1, 4]
    assert validation_size(12, 0.0) == 0 and validation_size(5, 0.99) == 4


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"seed": -1}, "seed"),
    ],
)
def test_train_refuses_bad_arguments(
    depot: ModelManager, prepared: PreparedScores, kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(TrainingError, match=needle):
        train_predictor(depot, data=prepared, **kwargs)


def test_train_refuses_a_file_prepare_did_not_write(depot: ModelManager, tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="no such prepared-scores file"):
        train_predictor(depot, data=tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(TrainingDataError, match="not a prepared-scores file") as info:
        train_predictor(depot, data=other)
    assert info.value.path == other
    gone = PreparedScores(tmp_path / "gone.safetensors", count=4, dim=16, clip_key="k")
    with pytest.raises(TrainingDataError, match="cannot read the prepared scores"):
        train_predictor(depot, data=gone)


def test_progress_bar(depot: ModelManager, prepared: PreparedScores, capsys: pytest.CaptureFixture[str]) -> None:
    train_predictor(depot, data=prepared, output_name="with-bar", epochs=2, progress=True)
    assert "2/2" in capsys.readouterr().err


# -- released LAION files and inference errors ------------------------------------------------------
def _laion_file(path: Path, width: int, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """A predictor saved as LAION released theirs: ``torch.save`` of a state dict (no metadata)."""
    generator = torch.Generator().manual_seed(seed)
    sd = {k: v.detach().clone() for k, v in PredictorMLP.seeded(width, generator).state_dict().items()}
    torch.save(sd, path)
    return path, sd


def test_laion_pth_is_identified_loaded_and_needs_clip(
    depot: ModelManager, clip_key: str, embedder: ClipEmbedder, tmp_path: Path
) -> None:
    path, sd = _laion_file(tmp_path / "sac+logos+ava1-l14-linearMSE.pth", embedder.dim)
    ident = identify(path)
    assert (ident.type, ident.base) == (ModelType.ClipPredictor, BaseModelType.Any)
    assert ident.extra["embedding_dim"] == embedder.dim
    key = depot.install.install_path(path, {"name": "laion-aesthetic"})
    model = depot.load_model_by_key(key).model
    assert isinstance(model, PredictorMLP)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    with pytest.raises(ServiceInputError, match=r"does not say which CLIP model.*pass clip="):
        ClipPredictor.from_key(depot, key)
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    with torch.no_grad():
        expected = float(model(torch.from_numpy(embedder.image(image)))[0, 0])
    assert predict(depot, key, image, clip=clip_key) == pytest.approx(expected, abs=1e-5)


def test_clip_of_another_width_is_refused(depot: ModelManager, clip_key: str, tmp_path: Path) -> None:
    path, _ = _laion_file(tmp_path / "l14.pth", 768)
    assert identify(path).extra["embedding_dim"] == 768
    key = depot.install.install_path(path, {"name": "l14-aesthetic"})
    with pytest.raises(WrongModelTypeError, match=r"scores 768-wide CLIP embeddings.*makes 16-wide ones") as info:
        ClipPredictor.from_key(depot, key, clip=clip_key)
    assert info.value.key == clip_key


def _with_clip_metadata(path: Path, width: int, **meta: str) -> Path:
    generator = torch.Generator().manual_seed(1)
    save_file(dict(PredictorMLP.seeded(width, generator).state_dict()), str(path), metadata=meta)
    return path


def test_the_clip_is_found_by_hash_or_named_when_missing(
    depot: ModelManager, clip_key: str, embedder: ClipEmbedder, tmp_path: Path
) -> None:
    clip_hash = depot.store.get_model(clip_key).hash or ""
    gone = "f" * 32
    moved = _with_clip_metadata(
        tmp_path / "moved.safetensors",
        embedder.dim,
        **{"predictor.clip_key": gone, "predictor.clip_name": "clip", "predictor.clip_hash": clip_hash},
    )
    key = depot.install.install_path(moved, {"name": "moved"})
    predictor = ClipPredictor.from_key(depot, key)  # the same CLIP content, installed under another key
    assert predictor.embedder.bound.key == clip_key
    missing = _with_clip_metadata(
        tmp_path / "missing.safetensors",
        embedder.dim,
        **{"predictor.clip_key": gone, "predictor.clip_name": "my-clip", "predictor.clip_hash": "blake3:00"},
    )
    key = depot.install.install_path(missing, {"name": "missing"})
    with pytest.raises(UnknownModelException, match=rf"trained on CLIP model 'my-clip' \(key {gone}\).*clip="):
        ClipPredictor.from_key(depot, key)


def test_a_model_of_another_type_is_refused(depot: ModelManager, clip_key: str) -> None:
    with pytest.raises(WrongModelTypeError, match="takes clip_predictor models"):
        ClipPredictor.from_key(depot, clip_key)


def test_importing_modeldepot_train_leaves_the_predictor_alone() -> None:
    code = (
        "import sys, modeldepot.train\n"
        "assert 'modeldepot.train.predictor' not in sys.modules\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
