"""CaptionedImageDataset over tiny folders built with PIL: caption files and their fallbacks, the errors a
user can cause, kohya repeat folders and multiply.txt, aspect-ratio buckets, batches that cover an epoch
once without mixing buckets, seeded augmentations, and kohya's tag and folder statistics."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from modeldepot.errors import TrainingDataError  # noqa: E402
from modeldepot.train import CaptionedImageDataset  # noqa: E402
from modeldepot.train._buckets import BucketPlan, nearest_bucket  # noqa: E402
from modeldepot.train.dataset import Batch, DatasetItem  # noqa: E402

pytestmark = pytest.mark.torch

SMALL = {"resolution": 32, "bucket_step": 8}


def image(path: Path, size: tuple[int, int] = (32, 32), caption: str | None = None, **save: object) -> Path:
    """A gradient image (so crops and flips show in the pixels) and, when given, its .txt caption."""
    w, h = size
    xs = np.linspace(0, 255, w, dtype=np.float64)[None, :, None]
    ys = np.linspace(0, 255, h, dtype=np.float64)[:, None, None]
    pixels = np.concatenate([np.broadcast_to(xs, (h, w, 1)), np.broadcast_to(ys, (h, w, 1)), np.full((h, w, 1), 90)], 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(path, **save)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """2 top images (1 repeat), a 3_wide folder of 48x32 images, a 2_tall folder with one 32x48."""
    root = tmp_path / "data"
    image(root / "a.png", caption="Red, apple, fruit")
    image(root / "b.jpg", caption="green, apple")
    for name in ("w1.png", "w2.png", "w3.webp"):
        image(root / "3_wide" / name, (48, 32), caption="wide, landscape")
    image(root / "2_tall" / "t.bmp", (32, 48), caption="tall")
    return root


# Captions ---------------------------------------------------------------------------------------
def test_captions_come_from_txt_then_caption_files(tmp_path: Path) -> None:
    image(tmp_path / "a.png", caption="  from txt \n")
    image(tmp_path / "b.png")
    (tmp_path / "b.caption").write_text("from caption", encoding="utf-8")
    image(tmp_path / "c.png", caption="txt wins")
    (tmp_path / "c.caption").write_text("caption loses", encoding="utf-8")
    image(tmp_path / "d.png", caption="")  # an empty caption is allowed
    image(tmp_path / "e.png", caption="first line\n\nsecond line\n")

    ds = CaptionedImageDataset(tmp_path, **SMALL)

    assert [(i.path.name, i.caption) for i in ds.items] == [
        ("a.png", "from txt"),
        ("b.png", "from caption"),
        ("c.png", "txt wins"),
        ("d.png", ""),
        ("e.png", "first line"),
    ]
    assert any("e.txt" in note and "first line" in note for note in ds.notes)
    assert any("c.caption" in note for note in ds.notes)  # the losing caption file is reported unused


def test_caption_ext_and_default_caption(tmp_path: Path) -> None:
    image(tmp_path / "a.png", caption="ignored txt")
    (tmp_path / "a.tags").write_text("tagged", encoding="utf-8")
    image(tmp_path / "b.png")

    custom = CaptionedImageDataset(tmp_path, caption_ext=".tags", default_caption="fallback", **SMALL)
    assert [i.caption for i in custom.items] == ["tagged", "fallback"]

    dreambooth = CaptionedImageDataset(tmp_path, caption_ext=None, default_caption="a photo of sks dog", **SMALL)
    assert [i.caption for i in dreambooth.items] == ["a photo of sks dog"] * 2


def test_missing_captions_error_lists_files_and_the_ways_out(tmp_path: Path) -> None:
    image(tmp_path / "captioned.png", caption="ok")
    for i in range(7):
        image(tmp_path / "2_sub" / f"img{i}.png")

    with pytest.raises(TrainingDataError) as caught:
        CaptionedImageDataset(tmp_path, **SMALL)

    message = str(caught.value)
    assert "7 image(s)" in message
    assert "2_sub/img0.txt" in message and "2_sub/img4.txt" in message and "img5" not in message
    assert "..." in message
    assert "--caption-ext" in message and "--default-caption" in message and "caption_ext=" in message
    assert "\n" not in message
    assert caught.value.path == tmp_path.resolve()


def test_caption_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    image(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes(b"caf\xe9, latin-1")

    with pytest.raises(TrainingDataError, match="not UTF-8") as caught:
        CaptionedImageDataset(tmp_path, **SMALL)
    assert caught.value.path == (tmp_path / "a.txt").resolve()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"caption_ext": "txt"}, "caption_ext"),
        ({"caption_ext": None}, "default_caption="),
        ({"resolution": 36, "bucket_step": 8}, "multiple of bucket_step"),
        ({"resolution": 0}, "resolution"),
        ({"crop": "top"}, "crop"),
        ({"repeats": 0}, "repeats"),
        ({"keep_tokens": -1}, "keep_tokens"),
        ({"resolution": 32, "bucket_step": 8, "min_bucket": 12}, "min_bucket"),
        ({"resolution": 32, "bucket_step": 8, "max_bucket": 24}, "enclose"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, object], fragment: str) -> None:
    image(tmp_path / "a.png", caption="x")
    with pytest.raises(TrainingDataError, match=fragment):
        CaptionedImageDataset(tmp_path, **options)  # type: ignore[arg-type]


# Folders and images -------------------------------------------------------------------------------
def test_empty_folder_names_the_folder_and_extensions(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("no images here", encoding="utf-8")
    (tmp_path / "5_empty").mkdir()
    image(tmp_path / ".hidden.png", caption="x")

    with pytest.raises(TrainingDataError) as caught:
        CaptionedImageDataset(tmp_path, **SMALL)
    assert str(tmp_path.resolve()) in str(caught.value)
    assert ".png" in str(caught.value) and ".webp" in str(caught.value)


def test_missing_folder_and_file_instead_of_folder(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="does not exist") as caught:
        CaptionedImageDataset(tmp_path / "nope", **SMALL)
    assert caught.value.path == (tmp_path / "nope").resolve()

    file = image(tmp_path / "a.png", caption="x")
    with pytest.raises(TrainingDataError, match="is a file"):
        CaptionedImageDataset(file, **SMALL)


def test_unreadable_image_is_named_at_construction(tmp_path: Path) -> None:
    image(tmp_path / "good.png", caption="fine")
    (tmp_path / "bad.png").write_bytes(b"this is not a png at all" * 4)
    (tmp_path / "bad.txt").write_text("broken", encoding="utf-8")

    with pytest.raises(TrainingDataError, match=r"bad\.png") as caught:
        CaptionedImageDataset(tmp_path, **SMALL)
    assert caught.value.path == (tmp_path / "bad.png").resolve()
    assert "\n" not in str(caught.value)


def test_truncated_image_is_named_when_decoded(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # does not compress
    path = tmp_path / "cut.png"
    Image.fromarray(noise, "RGB").save(path)
    (tmp_path / "cut.txt").write_text("cut", encoding="utf-8")
    path.write_bytes(path.read_bytes()[:1000])  # the header survives, most pixels do not

    ds = CaptionedImageDataset(tmp_path, **SMALL)  # only headers are read here
    with pytest.raises(TrainingDataError, match=r"cut\.png"):
        ds.sample(0)


def test_kohya_folders_multiply_txt_and_top_repeats(tmp_path: Path) -> None:
    image(tmp_path / "top.png", caption="t")
    image(tmp_path / "10_mycat" / "c.png", caption="cat")
    image(tmp_path / "2_dog" / "d1.png", caption="dog")
    image(tmp_path / "2_dog" / "d2.png", caption="dog")
    (tmp_path / "2_dog" / "multiply.txt").write_text("1.75\n", encoding="utf-8")  # 2 x 1.75 = 3.5 -> 4
    image(tmp_path / "unprefixed" / "u.png", caption="never read")
    image(tmp_path / "10_mycat" / "nested" / "n.png", caption="never read")
    (tmp_path / "multiply.txt").write_text("2", encoding="utf-8")

    ds = CaptionedImageDataset(tmp_path, repeats=3, **SMALL)

    assert {i.path.name: (i.repeats, i.folder) for i in ds.items} == {
        "top.png": (6, tmp_path.name),
        "c.png": (10, "10_mycat"),
        "d1.png": (4, "2_dog"),
        "d2.png": (4, "2_dog"),
    }
    assert len(ds) == 6 + 10 + 4 + 4
    assert ds.dataset_dirs() == {
        tmp_path.name: {"n_repeats": 6, "img_count": 1},
        "10_mycat": {"n_repeats": 10, "img_count": 1},
        "2_dog": {"n_repeats": 4, "img_count": 2},
    }
    notes = " | ".join(ds.notes)
    assert "unprefixed" in notes and "nested" in notes and "rounded to 4" in notes


def test_bad_multiply_txt_is_named(tmp_path: Path) -> None:
    image(tmp_path / "a.png", caption="x")
    (tmp_path / "multiply.txt").write_text("lots", encoding="utf-8")
    with pytest.raises(TrainingDataError, match=r"multiply\.txt"):
        CaptionedImageDataset(tmp_path, **SMALL)


def test_exif_rotated_photo_is_bucketed_upright(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 48x32, shown turned a quarter: 32x48
    image(tmp_path / "phone.jpg", (48, 32), caption="x", exif=exif)

    ds = CaptionedImageDataset(tmp_path, **SMALL)

    assert ds.items[0].size == (32, 48)
    pixels, _ = ds.sample(0)
    assert pixels.shape[1] > pixels.shape[2]  # taller than wide, like its bucket
    assert ds.items[0].bucket[1] > ds.items[0].bucket[0]


def test_modes_become_rgb_and_transparency_white(tmp_path: Path) -> None:
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("L", (32, 32), 0).save(tmp_path / "grey.png")
    Image.new("RGB", (32, 32), (255, 0, 0)).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")  # 16-bit grey

    ds = CaptionedImageDataset(tmp_path, caption_ext=None, default_caption="", **SMALL)
    by_name = {item.path.name: ds.sample(n)[0] for n, item in enumerate(ds.items)}

    assert torch.equal(by_name["clear.png"], torch.ones(3, 32, 32))
    assert torch.equal(by_name["grey.png"], -torch.ones(3, 32, 32))
    assert torch.equal(by_name["deep.png"], torch.ones(3, 32, 32))
    red = by_name["palette.png"]
    assert torch.equal(red[0], torch.ones(32, 32)) and torch.equal(red[1:], -torch.ones(2, 32, 32))


# Buckets ----------------------------------------------------------------------------------------
def test_wide_and_tall_images_get_transposed_buckets(mixed: Path) -> None:
    ds = CaptionedImageDataset(mixed, resolution=64, bucket_step=16)

    buckets = {i.path.name: i.bucket for i in ds.items}
    assert buckets["a.png"] == (64, 64)
    assert buckets["w1.png"] == (80, 48)  # 1.5 wide: nearest 80x48 (1.67), not 64x64 or 96x32
    assert buckets["t.bmp"] == (48, 80)
    assert ds.buckets == {(48, 80): 2, (64, 64): 2, (80, 48): 9}

    square = CaptionedImageDataset(mixed, resolution=64, bucket_step=16, buckets=False)
    assert {i.bucket for i in square.items} == {(64, 64)}
    assert square.sample(2)[0].shape == (3, 64, 64)


def test_bucket_sizes_follow_the_limits() -> None:
    plan = BucketPlan.build(512, 64, None, None, enabled=True)
    sizes = plan.sizes()

    assert (plan.min_side, plan.max_side) == (256, 1024)
    assert (512, 512) in sizes
    for w, h in sizes:
        assert w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 and min(w, h) >= 256 and max(w, h) <= 1024
        assert (h, w) in sizes
    # kohya keeps the largest bucket per width: a 5:4 photo trains at 576x448, not at an exact 320x256
    assert nearest_bucket((1280, 1024), sizes) == (576, 448)
    assert nearest_bucket((1024, 1280), sizes) == (448, 576)


# Batches ----------------------------------------------------------------------------------------
def test_batches_cover_each_sample_once_and_never_mix_buckets(mixed: Path) -> None:
    ds = CaptionedImageDataset(mixed, resolution=64, bucket_step=16)
    expected = Counter({i.path: i.repeats for i in ds.items})

    for epoch in (0, 1):
        batches = list(ds.batches(4, epoch=epoch))
        seen: Counter[Path] = Counter()
        for batch in batches:
            assert isinstance(batch, Batch)
            w, h = batch.size
            assert batch.pixel_values.shape == (len(batch.paths), 3, h, w)
            assert batch.pixel_values.dtype == torch.float32
            assert {ds.items[[i.path for i in ds.items].index(p)].bucket for p in batch.paths} == {batch.size}
            assert len(batch.captions) == len(batch.paths)
            seen.update(batch.paths)
        assert seen == expected
        assert len(batches) == ds.steps_per_epoch(4) == 1 + 1 + 3  # 2, 2 and 9 samples: short batches kept
        assert sorted(len(b.paths) for b in batches) == [1, 2, 2, 4, 4]


def test_same_seed_and_epoch_repeat_exactly_other_epochs_differ(mixed: Path) -> None:
    options = {"resolution": 64, "bucket_step": 16, "crop": "random", "flip": True, "shuffle_tags": True}

    def run(seed: int, epoch: int) -> list[tuple[list[Path], list[str], torch.Tensor]]:
        ds = CaptionedImageDataset(mixed, seed=seed, **options)  # type: ignore[arg-type]
        return [(b.paths, b.captions, b.pixel_values) for b in ds.batches(2, epoch=epoch)]

    first, again = run(7, 0), run(7, 0)
    assert len(first) == len(again)
    for (paths_a, captions_a, pixels_a), (paths_b, captions_b, pixels_b) in zip(first, again, strict=True):
        assert paths_a == paths_b and captions_a == captions_b
        assert torch.equal(pixels_a, pixels_b)
    assert [b[0] for b in run(7, 1)] != [b[0] for b in first]
    assert [b[0] for b in run(8, 0)] != [b[0] for b in first]

    # crops and flips change with the sample: repeats of one wide image are not all the same pixels
    ds = CaptionedImageDataset(mixed, seed=7, **options)  # type: ignore[arg-type]
    start = sum(i.repeats for i in ds.items[: [i.path.name for i in ds.items].index("w1.png")])
    assert ds.items[[i.path.name for i in ds.items].index("w1.png")].repeats == 3
    assert len({ds.sample(n)[0].numpy().tobytes() for n in range(start, start + 3)}) > 1
    assert torch.equal(ds.sample(5, epoch=3)[0], ds.sample(5, epoch=3)[0])


def test_flip_and_center_crop_pixels(tmp_path: Path) -> None:
    image(tmp_path / "a.png", (64, 32), caption="x")  # already 32 high: only the middle 32 columns are cut
    plain = CaptionedImageDataset(tmp_path, buckets=False, **SMALL)
    pixels, _ = plain.sample(0)
    source = np.asarray(Image.open(tmp_path / "a.png").convert("RGB"))
    middle = torch.from_numpy(source[:, 16:48].copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(pixels, middle)

    cropping = CaptionedImageDataset(tmp_path, buckets=False, crop="random", repeats=8, **SMALL)
    windows = {
        x: torch.from_numpy(source[:, x : x + 32].copy()).permute(2, 0, 1).float() / 127.5 - 1 for x in range(33)
    }
    offsets = [next(x for x, w in windows.items() if torch.allclose(cropping.sample(n)[0], w)) for n in range(8)]
    assert len(set(offsets)) > 1

    flipping = CaptionedImageDataset(tmp_path, buckets=False, flip=True, repeats=16, **SMALL)
    samples = [flipping.sample(n)[0] for n in range(16)]
    flipped = [s for s in samples if torch.equal(s, torch.flip(middle, dims=[2]))]
    kept = [s for s in samples if torch.equal(s, pixels)]
    assert flipped and kept and len(flipped) + len(kept) == 16


def test_tag_shuffling_keeps_the_first_tokens(tmp_path: Path) -> None:
    image(tmp_path / "a.png", caption="sks person, blue shirt,smiling , outdoors, , red hat")
    ds = CaptionedImageDataset(tmp_path, shuffle_tags=True, keep_tokens=1, repeats=12, **SMALL)

    captions = [ds.sample(n)[1] for n in range(12)]

    for caption in captions:
        tags = caption.split(", ")
        assert tags[0] == "sks person"
        assert sorted(tags[1:]) == ["blue shirt", "outdoors", "red hat", "smiling"]
    assert len(set(captions)) > 1
    assert ds.sample(3, epoch=2)[1] == ds.sample(3, epoch=2)[1]
    plain = CaptionedImageDataset(tmp_path, keep_tokens=1, **SMALL)
    assert plain.sample(0)[1] == "sks person, blue shirt,smiling , outdoors, , red hat"


def test_sample_range_and_index_checks(mixed: Path) -> None:
    ds = CaptionedImageDataset(mixed, resolution=64, bucket_step=16)
    pixels, caption = ds.sample(len(ds) - 1)
    assert pixels.dtype == torch.float32 and pixels.dim() == 3
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
    assert float(pixels.min()) < -0.9 and float(pixels.max()) > 0.9  # the gradient spans the range
    assert caption
    with pytest.raises(IndexError):
        ds.sample(len(ds))
    with pytest.raises(TrainingDataError, match="batch_size"):
        ds.steps_per_epoch(0)
    with pytest.raises(TrainingDataError, match="batch_size"):
        ds.batches(0)  # refused when called, not at the first batch
    with pytest.raises(TrainingDataError, match="epoch"):
        ds.sample(0, epoch=-1)


# Statistics -------------------------------------------------------------------------------------
def test_tag_frequencies_count_images_not_repeats(mixed: Path) -> None:
    ds = CaptionedImageDataset(mixed, resolution=64, bucket_step=16)

    assert ds.tag_frequencies() == {
        "data": {"red": 1, "apple": 2, "fruit": 1, "green": 1},
        "3_wide": {"wide": 3, "landscape": 3},
        "2_tall": {"tall": 1},
    }
    assert ds.dataset_dirs() == {
        "data": {"n_repeats": 1, "img_count": 2},
        "3_wide": {"n_repeats": 3, "img_count": 3},
        "2_tall": {"n_repeats": 2, "img_count": 1},
    }
    assert all(isinstance(i, DatasetItem) for i in ds.items)


def test_importing_modeldepot_train_does_not_import_torch() -> None:
    code = "import modeldepot.train, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
