"""Edge-aware upsampling: a result computed at a working size, brought to the photo's full size with the
photo's own full-resolution detail.

The style scale (``controls.stylize(style_scale=...)``) stylizes a large photo at a working size; a plain
enlargement of that result would be soft. ``guided_upsample`` uses the full-resolution photo as the
guide, in the manner of the fast guided filter (He & Sun 2015, "Fast Guided Filter"): at the working
size each output channel ``p`` is modelled, in every ``(2r+1)^2`` window, as a linear function of the
photo's luminance ``I``, ``p ~ a * I + b`` (``a = cov(I, p) / (var(I) + eps)``, box-averaged). The
full-size result is then

    q = cubic(p) + bilinear(a) * (I_full - cubic(I_low))

``I_low`` being the photo's luminance brought to the working size with the package's one resize, as the
network saw it. ``I_full - cubic(I_low)`` is the detail the photo lost at the working size; it comes
back scaled by how strongly the stylized output follows the photo locally. Where the output follows the
photo's edges (``a`` large) those edges come back at full sharpness; where the painting's strokes ignore
the photo (``a ~ 0``) the strokes are enlarged as they are (not box-blurred as a plain guided filter
would do, and with no photo texture painted over them). So a photo with real detail beyond the working
size gets it back at full size: on three 3072 px collages of real photos the output has 1.55-1.8x the
mean luminance gradient of a 1024 px output enlarged bicubically (ghiasi, 11 paintings; docs/benchmarks.md,
session 9); a photo
that was itself enlarged has no such detail, and none is invented.

The enlargements are Catmull-Rom cubics (``CUBIC_A``; torch's antialiased bicubic, which enlarges with
that kernel as Pillow does), not the package's bilinear ``resize`` (a
downscaling filter; bilinear enlargement is visibly softer) nor torch's bicubic (its -0.75 kernel
overshoots, and the rings around every stroke edge change the look seen whole). ``p`` and ``I_low``
use the same one so that where ``p`` follows the photo linearly, ``q = a * I_full + b`` exactly; the
coefficients ``a`` are enlarged bilinearly (no overshoot). With equal sizes the detail term is zero and
``p`` comes back unchanged.

Tensor contract: ``low`` ``(B,C,h,w)`` float in [0,1]; ``guide`` ``(B,3,H,W)`` RGB or ``(B,1,H,W)`` grey,
float in [0,1], with ``H >= h`` and ``W >= w``; returns ``(B,C,H,W)`` in [0,1] on ``low``'s device and
dtype. The full-size work is done in bands of rows of at most ``band_pixels`` pixels, so the
temporaries stay bounded whatever the photo's size (only the output itself is full size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.errors import InputError
from pipeline.imaging import luminance, resize

# window radius at the working size and the regulariser (luminance units squared): a 5x5 window and
# eps = 1e-4 (a local luminance std of 0.01) keep the photo's fine texture; see docs/benchmarks.md
RADIUS = 2
EPS = 1e-4
BAND_PIXELS = 1 << 22  # 4 MP per band of full-size rows
# Keys' cubic parameter of the enlargements: -0.5 (Catmull-Rom), the one that reproduces quadratics, not
# torch's plain bicubic -0.75, whose stronger overshoot rings around every stroke edge. Measured with ghiasi
# (512 px results enlarged 6x, seen back at the metrics' 256 px): -0.75 moved the Gram style distance by up
# to +9% (udnie, Composition VII), -0.5 by up to +5% (docs/benchmarks.md, "Style scale", session 8). That
# view (the metrics' bilinear) itself reads a plain -0.5 enlargement up to +7% on some paintings (session 9).
# Fixed, not a setting: it is the kernel of torch's antialiased bicubic, which _cubic_rows reproduces
CUBIC_A = -0.5


def _box(x: Tensor, r: int) -> Tensor:
    """Mean over the (2r+1)^2 window around each pixel; windows are cut at the border (no padding values).

    Window sums by a depthwise convolution, divided by each window's pixel count: the values of
    ``avg_pool2d(count_include_pad=False)``, about 2.5x faster on CPU (22 vs 60 ms for 11 planes of 640x427).
    """
    k = 2 * r + 1
    ones = torch.ones(x.shape[1], 1, k, k, device=x.device, dtype=x.dtype)
    sums = F.conv2d(x, ones, padding=r, groups=x.shape[1])
    counts = F.conv2d(torch.ones_like(x[:1, :1]), ones[:1], padding=r)
    return sums / counts


def _rows(x: Tensor, out_h: int, y0: int, y1: int) -> Tensor:
    """Rows ``y0:y1`` of ``x`` (B,C,h,w) resized to ``out_h`` rows, bilinear with ``align_corners=False``:
    the same values as the corresponding rows of ``F.interpolate(x, (out_h, w), mode="bilinear")``."""
    h = x.shape[-2]
    y = torch.arange(y0, y1, device=x.device, dtype=torch.float64)
    src = ((y + 0.5) * (h / out_h) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(h - 1)
    i1 = (i0 + 1).clamp_max(h - 1)
    frac = (src - i0).to(x.dtype)[:, None]
    return x[..., i0, :] * (1 - frac) + x[..., i1, :] * frac


def _cubic_rows(x: Tensor, out_h: int, y0: int, y1: int) -> Tensor:
    """Rows ``y0:y1`` of ``x`` (B,C,h,w) enlarged to ``out_h`` rows with the Catmull-Rom cubic (Keys'
    kernel, ``CUBIC_A`` = -0.5): the same values as the corresponding rows of ``F.interpolate(x, (out_h,
    w), mode="bicubic", antialias=True)``, which is that kernel when enlarging (as Pillow's), with taps
    past the border dropped and the rest renormalised."""
    h = x.shape[-2]
    y = torch.arange(y0, y1, device=x.device, dtype=torch.float64)
    src = (y + 0.5) * (h / out_h) - 0.5
    base = src.floor()
    t = src - base
    a = CUBIC_A
    far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # noqa: E731 - |d| in [1, 2]
    near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1  # noqa: E731 - |d| in [0, 1]
    idx = torch.stack([base.long() + k - 1 for k in range(4)])
    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)]) * ((idx >= 0) & (idx < h))
    weights = (weights / weights.sum(0)).to(x.dtype)[..., None]
    idx = idx.clamp(0, h - 1)
    out = x[..., idx[0], :] * weights[0]
    for k in range(1, 4):
        out += x[..., idx[k], :] * weights[k]
    return out


def _band_up(x: Tensor, size: tuple[int, int], y0: int, y1: int, mode: str = "bilinear") -> Tensor:
    """Rows ``y0:y1`` of ``x`` enlarged to ``size`` (H, W), bilinear or ``"cubic"`` (Catmull-Rom: torch's
    antialiased bicubic, which only enlarges here; at scale 1 in H the column pass leaves rows as they are)."""
    cubic = mode == "cubic"
    resample = {"mode": "bicubic", "antialias": True} if cubic else {"mode": "bilinear"}
    if (y0, y1) == (0, size[0]):  # one band: torch's own pass is faster (equal within float rounding, ~1e-5)
        return F.interpolate(x, size=size, align_corners=False, **resample)
    rows = (_cubic_rows if cubic else _rows)(x, size[0], y0, y1)
    return F.interpolate(rows, size=(y1 - y0, size[1]), align_corners=False, **resample)


def guided_upsample(
    low: Tensor, guide: Tensor, *, radius: int = RADIUS, eps: float = EPS, band_pixels: int = BAND_PIXELS
) -> Tensor:
    """``low`` (B,C,h,w) brought to ``guide``'s (H, W) with the guide's full-resolution detail (module doc)."""
    if low.dim() != 4 or guide.dim() != 4 or guide.shape[1] not in (1, 3) or guide.shape[0] != low.shape[0]:
        shapes = f"{tuple(low.shape)} and {tuple(guide.shape)}"
        raise InputError(f"guided_upsample wants (B,C,h,w) and a (B,1|3,H,W) guide of the same B, got {shapes}")
    (h, w), (big_h, big_w) = low.shape[-2:], guide.shape[-2:]
    if big_h < h or big_w < w:
        raise InputError(f"guided_upsample enlarges: the guide {big_w}x{big_h} is smaller than {w}x{h}")
    if (h, w) == (big_h, big_w):
        return low
    guide_y = luminance(guide.to(low))
    # the photo at the working size, with the package's one resize, as the network saw it
    small_y = resize(guide_y, (h, w))
    mean_i, mean_p = _box(small_y, radius), _box(low, radius)
    cov = _box(small_y * low, radius) - mean_i * mean_p
    var = _box(small_y * small_y, radius) - mean_i * mean_i
    a = _box(cov / (var.clamp_min(0) + eps), radius)

    out = torch.empty(low.shape[0], low.shape[1], big_h, big_w, device=low.device, dtype=low.dtype)
    band = max(1, band_pixels // big_w)
    for y0 in range(0, big_h, band):
        y1 = min(y0 + band, big_h)
        detail = guide_y[..., y0:y1, :] - _band_up(small_y, (big_h, big_w), y0, y1, "cubic")
        strokes = _band_up(low, (big_h, big_w), y0, y1, "cubic")
        out[..., y0:y1, :] = strokes + _band_up(a, (big_h, big_w), y0, y1) * detail
    return out.clamp_(0, 1)
