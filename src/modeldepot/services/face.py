"""``FaceRestorer``: GFPGAN and CodeFormer on aligned face crops, or on the faces a detector finds.

Both networks take an aligned square face of their own size (``face_size``: 512 px for the released
models) in [-1, 1] and return it restored at the same size. An image of exactly that size is taken
as such a crop. In any other image the faces are found by a detector, a callable
``detector(image) -> [(x0, y0, x1, y1), ...]``: by default OpenCV's frontal-face Haar cascade when
``cv2`` is importable (``pip install opencv-python-headless``). Each box is grown to a square with
``margin`` on every side, cropped, resized to ``face_size``, restored, resized back and pasted
with a feathered mask, so the pixels outside those squares are never touched.

``weight`` means what each model's users know it as:

* CodeFormer: the fidelity weight ``w``: 0 rebuilds the face from the codebook alone (strongest
  restoration), 1 keeps the most of the input;
* GFPGAN, which has no such knob: how much of the restored face replaces the input
  (``weight x restored + (1 - weight) x input``, as A1111's "GFPGAN visibility"): 0 returns the
  input unchanged, 1 the restored face alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from modeldepot.errors import InvalidImageError, ServiceInputError, WrongModelTypeError
from modeldepot.services._images import check_image, generator, module_device, module_dtype, to_tensor
from modeldepot.services.base import Service
from modeldepot.services.upscale import FACE_ARCHITECTURES
from modeldepot.taxonomy import ModelType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase

Box = tuple[int, int, int, int]
#: ``detector(image) -> [(x0, y0, x1, y1), ...]``: the faces in an RGB image, in pixels.
Detector = Callable[[Image.Image], Sequence[Sequence[float]]]

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
_INSTALL_HINT = "pip install opencv-python-headless"


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade (``cv2.data.haarcascades``), as a :data:`Detector`.

    Fast and shipped inside the OpenCV wheel (no download), at the price of missing profile faces.
    """

    def __init__(self, *, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 32) -> None:
        try:
            cv2 = importlib.import_module("cv2")
        except ImportError as exc:
            raise ServiceInputError(f"the Haar face detector needs OpenCV: {_INSTALL_HINT}") from exc
        self._cv2 = cv2
        self._classifier = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
        if self._classifier.empty():
            raise ServiceInputError(f"OpenCV could not read its {HAAR_CASCADE} from {cv2.data.haarcascades}")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def __call__(self, image: Image.Image) -> list[Box]:
        gray = np.asarray(image.convert("L"))
        found = self._classifier.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_size,) * 2
        )
        return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]


def face_square(box: Sequence[float], size: tuple[int, int], margin: float) -> Box | None:
    """The square crop for a detected ``box`` in an image of ``size`` (w, h): the box's longer side plus
    ``margin`` of it on each side, centred on the box, shrunk to fit and shifted inside the image
    (so no crop is padded). None for a box with no area inside the image."""
    width, height = size
    x0, y0 = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x1, y1 = min(float(width), float(box[2])), min(float(height), float(box[3]))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    side = min(width, height, max(1, round(max(x1 - x0, y1 - y0) * (1 + 2 * margin))))
    left = min(max(0, round((x0 + x1 - side) / 2)), width - side)
    top = min(max(0, round((y0 + y1 - side) / 2)), height - side)
    return left, top, left + side, top + side


def _feather(side: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A ``side`` x ``side`` x 1 paste mask: 1 inside, falling linearly to ~0 over the outer eighth."""
    ramp = max(1, side // 8)
    i = np.arange(side, dtype=np.float32)
    edge = np.minimum(np.minimum(i, side - 1 - i) + 0.5, ramp) / ramp
    return np.minimum.outer(edge, edge)[:, :, None]


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draws inside come from ``seed`` (the global generators are restored afterwards); None: unseeded."""
    if seed is None:
        yield
        return
    accelerated = device.type != "cpu"
    with torch.random.fork_rng(
        devices=[device] if accelerated else [], device_type=device.type if accelerated else None
    ):
        if accelerated:
            torch.manual_seed(seed)
        else:
            torch.default_generator.manual_seed(seed)
        yield


class FaceRestorer(Service):
    """GFPGAN or CodeFormer, on an aligned face crop or on every face a detector finds in an image.

    ``FaceRestorer(model, detector=None, margin=0.3, randomize_noise=False)(image, weight=0.5,
    seed=None, aligned=None)``; see the module docstring for ``weight`` and the detector. ``detector``:
    None picks OpenCV's Haar cascade when ``cv2`` is installed, False turns detection off.
    ``randomize_noise`` (GFPGAN): fresh StyleGAN noise drawn from ``seed`` instead of the noise maps
    stored in the file (the default, deterministic whatever the seed). CodeFormer runs with
    ``adain=True``, as its own inference script does.
    """

    model_types = (ModelType.SpandrelImageToImage,)

    def __init__(
        self,
        model: Any,
        *,
        detector: Detector | bool | None = None,
        margin: float = 0.3,
        randomize_noise: bool = False,
    ) -> None:
        super().__init__(model)
        net = self.bound.model
        arch = getattr(net, "arch", None)
        if not isinstance(net, torch.nn.Module) or arch not in FACE_ARCHITECTURES:
            what = type(net).__name__ + (f", architecture {arch}" if isinstance(arch, str) else "")
            raise WrongModelTypeError(
                f"FaceRestorer cannot use {self.bound.label} ({what}): it is not a GFPGAN or CodeFormer face restorer"
                + ("; use Upscaler" if getattr(net, "scale", 1) != 1 or arch == "ESRGAN" else ""),
                key=self.bound.key,
                expected=FACE_ARCHITECTURES,
            )
        self.arch: str = arch
        self.face_size = int(getattr(net, "out_size", 512))
        if not isinstance(margin, int | float) or isinstance(margin, bool) or not 0 <= margin < math.inf:
            raise ServiceInputError(f"margin must be a number >= 0 (a fraction of the face box), not {margin!r}")
        self.margin = float(margin)
        self.randomize_noise = bool(randomize_noise)
        if detector is None or detector is True:
            self.detector: Detector | None = HaarFaceDetector() if self.detector_available() else None
            if detector is True and self.detector is None:
                raise ServiceInputError(f"detector=True needs OpenCV's face detector: {_INSTALL_HINT}")
        elif detector is False:
            self.detector = None
        elif callable(detector):
            self.detector = detector
        else:
            raise ServiceInputError(f"detector must be a callable image -> boxes, None or False, not {detector!r}")

    @classmethod
    def check_config(cls, config: ModelConfigBase) -> None:
        """Refuse records of other types, and upscalers, which share the face restorers' type."""
        super().check_config(config)
        arch = getattr(config, "architecture", None)
        if arch is not None and arch not in FACE_ARCHITECTURES:
            raise WrongModelTypeError(
                f"FaceRestorer cannot use model {config.name!r}: its architecture is {arch}, not GFPGAN or "
                "CodeFormer (face restorers); use Upscaler",
                key=config.key,
                expected=FACE_ARCHITECTURES,
            )

    @classmethod
    def detector_available(cls) -> bool:
        """Whether the default face detector (OpenCV's Haar cascade) can be used: ``cv2`` is installed."""
        return importlib.util.find_spec("cv2") is not None

    def __call__(
        self, image: Image.Image, *, weight: float = 0.5, seed: int | None = None, aligned: bool | None = None
    ) -> Image.Image:
        """``image`` with its face(s) restored, at its own size.

        ``aligned``: None takes a ``face_size`` x ``face_size`` image as an aligned crop and looks for
        faces in any other; True takes any square image as one aligned crop (resized to the model's
        size and back); False always runs the detector.
        """
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0 <= weight <= 1:
            raise ServiceInputError(f"weight must be a number in [0, 1], not {weight!r}")
        generator(seed)  # refuses a seed that is not an integer in [0, 2**64)
        rgb = check_image(image)
        size = self.face_size
        if aligned or (aligned is None and rgb.size == (size, size)):
            if rgb.width != rgb.height:
                raise InvalidImageError(
                    f"an aligned face crop must be square ({size}x{size} for this model); this image is "
                    f"{rgb.width}x{rgb.height}"
                )
            boxes: list[Box] = [(0, 0, rgb.width, rgb.height)]
            feather = False
        else:
            boxes = self._detect(rgb)
            feather = True
        out = np.array(rgb)
        with self.bound.running() as net:
            for box in boxes:
                square = box if not feather else face_square(box, rgb.size, self.margin)
                if square is not None:
                    self._paste(net, out, square, float(weight), seed, feather=feather)
        return Image.fromarray(out, "RGB")

    def _detect(self, rgb: Image.Image) -> list[Box]:
        if self.detector is None:
            s = self.face_size
            raise InvalidImageError(
                f"FaceRestorer: the image is {rgb.width}x{rgb.height} px, not an aligned {s}x{s} face crop, and "
                f"no face detector is installed to find the faces in it. Install OpenCV ({_INSTALL_HINT}) "
                "for its Haar-cascade detector, pass detector=<callable: image -> [(x0, y0, x1, y1), ...]>, "
                f"or give an aligned {s}x{s} face crop (aligned=True, or --aligned on the command line, "
                "takes any square crop)"
            )
        found = self.detector(rgb)
        boxes: list[Box] = []
        for box in found:
            try:
                values = [float(v) for v in box]
            except (TypeError, ValueError):
                values = []
            if len(values) != 4 or not all(math.isfinite(v) for v in values):
                raise ServiceInputError(f"the face detector returned {box!r}; each face must be (x0, y0, x1, y1)")
            x0, y0, x1, y1 = (round(v) for v in values)
            boxes.append((x0, y0, x1, y1))
        return boxes

    def _restore(self, net: Any, face: Image.Image, weight: float, seed: int | None) -> torch.Tensor:
        """The network's restoration of a ``face_size`` crop: ``[1, 3, S, S]`` in [0, 1] on the CPU."""
        device, dtype = module_device(net), module_dtype(net)
        x = to_tensor(face, device=device, dtype=dtype) * 2 - 1
        with torch.inference_mode():
            if self.arch == "CodeFormer":
                y = net(x, w=weight, adain=True)[0]
            else:
                with _seeded(seed if self.randomize_noise else None, device):
                    y = net(x, randomize_noise=self.randomize_noise)
        restored: torch.Tensor = ((y.float().cpu() + 1) / 2).clamp(0, 1)
        return restored

    def _paste(
        self, net: Any, out: np.ndarray[Any, Any], square: Box, weight: float, seed: int | None, *, feather: bool
    ) -> None:
        """Restore ``out[square]`` in place, blended by the feather mask and (GFPGAN) ``weight``."""
        x0, y0, x1, y1 = square
        side, size = x1 - x0, self.face_size
        # GFPGAN's weight is a blend with the input, done here at full resolution so 0 is the input exactly.
        alpha = weight if self.arch == "GFPGAN" else 1.0
        if alpha == 0:
            return
        crop = Image.fromarray(out[y0:y1, x0:x1], "RGB")
        face = crop if side == size else crop.resize((size, size), Image.Resampling.LANCZOS)
        restored = self._restore(net, face, weight, seed)
        array = restored[0].permute(1, 2, 0).mul(255).numpy()
        if side != size:
            back = Image.fromarray(np.rint(array).astype(np.uint8), "RGB").resize(
                (side, side), Image.Resampling.LANCZOS
            )
            array = np.asarray(back, dtype=np.float32)
        if feather or alpha != 1:
            mask = _feather(side) * alpha if feather else np.float32(alpha)
            region = out[y0:y1, x0:x1].astype(np.float32)
            array = region + (array - region) * mask
        out[y0:y1, x0:x1] = np.clip(np.rint(array), 0, 255).astype(np.uint8)


__all__ = ["Detector", "FaceRestorer", "HaarFaceDetector", "face_square"]
