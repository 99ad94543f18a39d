"""Pixel operations: the package's one resize, max-side fit, training crops, mask resize, luma and YCbCr.

A leaf: tensors (or uint8 arrays) in, the same out; torch and numpy only, nothing of ours imported, so the
byte codec, the model controls, the upsampler, metrics and training can all use it without import circles.

One filter everywhere: bilinear with antialias (``F.interpolate(mode="bilinear", antialias=True,
align_corners=False)``): a triangle filter widened by the scale factor when shrinking, so downscaling does
not alias; its weights are non-negative and sum to 1, so [0,1] stays [0,1]. The same photo and setting
give the same pixels in the CLI, batch jobs, training and metrics.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# BT.601, full range: Y in [0,1], Cb and Cr centred on 0
_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float32
)


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """(B,3,H,W) RGB in [0,1] -> YCbCr with Y in [0,1] and Cb, Cr centred on 0."""
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YCBCR.to(x), x)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_RGB_TO_YCBCR).to(x), x)


def luminance(x: Tensor) -> Tensor:
    """(B,3,H,W) -> (B,1,H,W) BT.601 luma; a (B,1,H,W) image is already luma and comes back as it is."""
    if x.shape[1] == 1:
        return x
    return rgb_to_ycbcr(x)[:, :1]


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` (B,C,H,W) float resampled to ``size`` (H, W) with the one filter (module docstring).
    The same size comes back unchanged."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Soft masks (B,K,H,W) in [0,1] (any dtype) -> float (B,K,h,w): the one mask resize, the filter of
    ``resize`` (antialiased when shrinking, so a thin region is averaged rather than sampled away)."""
    return resize(masks if masks.is_floating_point() else masks.float(), size).clamp(0, 1)


def max_side_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(H, W) with the longer side brought to ``max_side``: aspect kept, each side rounded, at least 1 px."""
    h, w = size
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_max_side(x: Tensor, max_side: int | None) -> Tensor:
    """Downscale ``x`` (B,C,H,W) float so its longer side is at most ``max_side``; it never enlarges.

    ``None`` (or 0) and images already small enough come back unchanged.
    """
    if not max_side:
        return x
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    if max(x.shape[-2:]) <= max_side:
        return x
    return resize(x, max_side_size(tuple(x.shape[-2:]), max_side))


def fit_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The (H, W) that ``fit`` gives an image of ``size``: unchanged unless its longer side passes ``max_side``.
    The decoder takes it as its target (``codec.decode_image``), so a JPEG decoded at a reduced scale ends at
    exactly the size a whole decode and ``fit`` would give."""
    if not max_side or max(size) <= max_side:
        return tuple(size)  # type: ignore[return-value]
    return max_side_size(size, max_side)


def resize_array(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H,W,3) uint8 resampled to ``size`` (H, W) with the one filter (``resize``); the same size comes
    back unchanged.

    Torch's uint8 path of the same filter (its weights in fixed point, on the pixels as they are laid out):
    within 1 of the float path on every value, and 15x faster on a 3 MP photo (0.14 -> 0.009 s), which
    matters when every big photo of a capped job comes through here after decoding."""
    if tuple(array.shape[:2]) == tuple(size):
        return array
    if not array.flags.writeable:  # torch warns on read-only arrays
        array = array.copy()
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0)  # channels-last uint8
    out = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).contiguous().numpy()


def fit(array: np.ndarray, max_side: int | None) -> np.ndarray:
    """(H,W,3) uint8 with the longer side capped at ``max_side`` (``max_side_size``, ``resize_array``).
    ``stylize image``, batch jobs and videos all go through here, so
    they feed the model the same pixels."""
    return resize_array(array, fit_size(tuple(array.shape[:2]), max_side))


def shorter_side_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(H, W) with the shorter side brought to ``shorter`` and the longer one truncated, as torchvision's
    ``Resize(int)`` computes it (``int(shorter * long / short)``), so the sizes match a torchvision pipeline."""
    h, w = size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(shorter * long / short)
    return (new_long, shorter) if w <= h else (shorter, new_long)


def center_crop_box(size: tuple[int, int], crop: int) -> tuple[int, int]:
    """(top, left) of the centre ``crop`` x ``crop`` square of an (H, W) image, rounded as torchvision's
    ``CenterCrop`` rounds (Python's ``round``: halves to even)."""
    h, w = size
    return int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))


def training_crop(array: np.ndarray, resize_shorter: int | None, center_crop: int | None) -> np.ndarray:
    """(H,W,3) uint8 -> ``Resize(resize_shorter)`` then ``CenterCrop(center_crop)``, torchvision's sizes
    and offsets with the one filter (``resize``; pixels differ from PIL's by rounding only). A photo smaller
    than the crop raises ``ValueError``: torchvision would pad it with black, which a training set should
    not learn from."""
    if resize_shorter:
        size = shorter_side_size(tuple(array.shape[:2]), resize_shorter)
        if size != tuple(array.shape[:2]):
            array = resize_array(array, size)
    if center_crop:
        h, w = array.shape[:2]
        if min(h, w) < center_crop:
            raise ValueError(f"photo is {w}x{h} px, smaller than center_crop={center_crop} (no padding)")
        top, left = center_crop_box((h, w), center_crop)
        array = array[top : top + center_crop, left : left + center_crop]
    return array
