"""ESRGAN / Real-ESRGAN RRDBNet, built from a state dict (spandrel is not usable here: see README).

Three key layouts are accepted and mapped to BasicSR names:

* BasicSR / Real-ESRGAN: ``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``, ``conv_up1/2``,
  ``conv_hr``, ``conv_last`` (often wrapped in ``params_ema`` / ``params``);
* xinntao's ESRGAN "new arch": ``conv_first``, ``RRDB_trunk.N.RDBK.convJ``, ``trunk_conv``,
  ``upconv1/2``, ``HRconv``, ``conv_last``;
* the original ESRGAN "old arch": ``model.0``, ``model.1.sub.N.RDBK.convJ.0``, ``model.1.sub.<nb>``,
  then the upsampling convs, HR conv and last conv as ``model.<i>`` in order.

Scale: 2 ** (number of ``conv_up`` layers); Real-ESRGAN x2/x1 models pixel-unshuffle their input,
recognised by ``in_channels == out_channels * 4 / * 16``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_NEW_RDB = re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$")


def to_basicsr_keys(sd: dict[str, Any]) -> dict[str, Any]:
    for wrapper in ("params_ema", "params"):
        if isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
            break
        if any(k.startswith(wrapper + ".") for k in sd):
            # a flattened pickle (the conversion cache flattens nested dicts with dots)
            sd = {k[len(wrapper) + 1 :]: v for k, v in sd.items() if k.startswith(wrapper + ".")}
            break
    flat = sd
    if "conv_first.weight" in flat and any(k.startswith("body.") for k in flat):
        return flat
    out: dict[str, Any] = {}
    if "conv_first.weight" in flat:  # new arch
        rename = {"trunk_conv": "conv_body", "upconv1": "conv_up1", "upconv2": "conv_up2", "HRconv": "conv_hr"}
        for k, v in flat.items():
            m = _NEW_RDB.match(k)
            if m:
                out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
                continue
            head, _, tail = k.partition(".")
            out[f"{rename.get(head, head)}.{tail}"] = v
        return out
    if "model.0.weight" in flat:  # old arch
        tail_ids = sorted(
            {int(k.split(".")[1]) for k in flat if k.startswith("model.") and k.split(".")[1] not in ("0", "1")}
        )
        ups = tail_ids[:-2]
        names = {i: f"conv_up{n + 1}" for n, i in enumerate(ups)}
        if len(tail_ids) >= 2:
            names[tail_ids[-2]] = "conv_hr"
            names[tail_ids[-1]] = "conv_last"
        nb = max((int(m[1]) for k in flat if (m := _OLD_RDB.match(k))), default=-1) + 1
        for k, v in flat.items():
            m = _OLD_RDB.match(k)
            parts = k.split(".")
            if m:
                out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            elif k.startswith("model.0."):
                out[f"conv_first.{parts[-1]}"] = v
            elif k.startswith(f"model.1.sub.{nb}."):
                out[f"conv_body.{parts[-1]}"] = v
            elif parts[0] == "model" and parts[1].isdigit() and int(parts[1]) in names:
                out[f"{names[int(parts[1])]}.{parts[-1]}"] = v
        return out
    raise ValueError("not an ESRGAN/RRDBNet state dict (no conv_first / model.0 weights)")


@functools.cache
def _classes() -> tuple[Any, Any, Any]:
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    class ResidualDenseBlock(nn.Module):
        def __init__(self, nf: int, gc: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
            self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
            self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
            self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
            self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(0.2, inplace=True)

        def forward(self, x: Any) -> Any:
            x1 = self.lrelu(self.conv1(x))
            x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
            x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
            x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
            x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
            return x5 * 0.2 + x

    class RRDB(nn.Module):
        def __init__(self, nf: int, gc: int) -> None:
            super().__init__()
            self.rdb1 = ResidualDenseBlock(nf, gc)
            self.rdb2 = ResidualDenseBlock(nf, gc)
            self.rdb3 = ResidualDenseBlock(nf, gc)

        def forward(self, x: Any) -> Any:
            return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x

    class RRDBNet(nn.Module):
        """Image -> image upscaler; ``.scale`` is the output/input size ratio."""

        def __init__(self, in_nc: int, out_nc: int, nf: int, nb: int, gc: int, n_up: int, unshuffle: int) -> None:
            super().__init__()
            self.unshuffle = unshuffle
            self.scale = 2**n_up // unshuffle
            self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1)
            self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
            self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
            self.ups = n_up
            for i in range(n_up):
                setattr(self, f"conv_up{i + 1}", nn.Conv2d(nf, nf, 3, 1, 1))
            self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(0.2, inplace=True)

        def forward(self, x: Any) -> Any:
            if self.unshuffle > 1:
                x = F.pixel_unshuffle(x, self.unshuffle)
            feat = self.conv_first(x)
            feat = feat + self.conv_body(self.body(feat))
            for i in range(self.ups):
                feat = self.lrelu(getattr(self, f"conv_up{i + 1}")(F.interpolate(feat, scale_factor=2, mode="nearest")))
            return self.conv_last(self.lrelu(self.conv_hr(feat)))

    return ResidualDenseBlock, RRDB, RRDBNet


def build_rrdbnet(sd: dict[str, Any], path: str = "state dict", *, partial: bool = False) -> Any:
    """An RRDBNet with ``sd``'s weights (any of the three layouts), exactly unless ``partial``.

    Raises ``ValueError`` when ``sd`` is not an RRDBNet at all, ``ModelLoadError`` naming the keys
    when it is one with weights missing, extra or of other shapes.
    """
    from modeldepot.load.loaders._strict import check_against

    sd = to_basicsr_keys(sd)
    _, _, rrdbnet = _classes()
    for needed in ("conv_first.weight", "conv_last.weight", "body.0.rdb1.conv1.weight"):
        if needed not in sd:
            raise ValueError(f"not an RRDBNet state dict (no {needed})")
    first = sd["conv_first.weight"]
    in_nc, nf = int(first.shape[1]), int(first.shape[0])
    out_nc = int(sd["conv_last.weight"].shape[0])
    gc = int(sd["body.0.rdb1.conv1.weight"].shape[0])
    nb = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    n_up = len({k.split(".")[0] for k in sd if k.startswith("conv_up")})
    unshuffle = 4 if in_nc == out_nc * 16 else 2 if in_nc == out_nc * 4 else 1
    model = rrdbnet(in_nc, out_nc, nf, nb, gc, n_up, unshuffle)
    expected = model.state_dict()
    check_against("an ESRGAN (RRDBNet) upscaler", path, sd, expected, partial=partial)
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)
    return model


__all__ = ["build_rrdbnet", "to_basicsr_keys"]
