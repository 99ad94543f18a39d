"""Optical flow on input frames, occlusion masks, backward warping and the warping error E_warp.

Conventions (one for the whole package):

* a flow ``f`` from frame A to frame B is ``(H, W, 2)`` float32 in pixels, ``f[y, x] = (dx, dy)``,
  defined on A's grid: the content at A's pixel ``(x, y)`` is at ``(x + dx, y + dy)`` in B;
* pixel ``(x, y)`` is the centre of that pixel, as in OpenCV (no half-pixel shift anywhere);
* ``warp(b, f)`` is backward warping: it brings B onto A's grid, ``warp(b, f)[y, x] = b(x + dx, y + dy)``
  (bilinear, ``cv2.remap`` on the pixel grid plus the flow). ``warp(B, flow(A, B)) ~= A`` where visible.

Flow is OpenCV's DIS (Kroeger et al. 2016, ``cv2.DISOpticalFlow``) on grey frames.

``visible(f, g)`` is the non-occlusion mask of Ruder et al. 2016 as Lai et al. 2018 compute it
(``detect_occlusion`` in their code), on A's grid, for ``f``: A->B and ``g``: B->A. A pixel is occluded when

* forward-backward check: ``|f + g~|^2 > 0.01 (|f|^2 + |g~|^2) + 0.5`` with ``g~ = warp(g, f)``;
* motion boundary: ``|grad f_x|^2 + |grad f_y|^2 > 0.01 |f|^2 + 0.002`` (forward differences);
* and, an addition of ours, when ``x + f(x)`` falls outside B's frame (content that has left the
  picture has nothing to compare with; Lai et al. clamp at the border instead).

``warp_error`` is Lai et al.'s E_warp of one pair, ``sum_visible ||V_t - warp(V_t+1, f)||^2 / n_visible``
with RGB in [0,1] (squared differences summed over the three channels); a video's E_warp is the mean
over its frame pairs.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM  # FAST is ~3x quicker and visibly worse on textures


def grey(frame: np.ndarray) -> np.ndarray:
    """(H,W,3) RGB uint8 -> (H,W) uint8, what DIS takes."""
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


class FlowEstimator:
    """DIS flow; one instance per thread (the OpenCV object keeps state between calls)."""

    def __init__(self, preset: int = PRESET) -> None:
        self.dis = cv2.DISOpticalFlow.create(preset)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow from grey frame ``a`` to grey frame ``b``: (H,W,2) float32, see the module doc."""
        return self.dis.calc(a, b, None)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of an (h, w) frame, built once per size (every warp and mask of a video uses them)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward-warp ``image`` (H,W[,C]) float32 onto the grid ``flow`` is defined on (bilinear, border
    replicated; pixels that land outside are masked by ``visible``)."""
    h, w = flow.shape[:2]
    xs, ys = _grid(h, w)
    return cv2.remap(
        np.ascontiguousarray(image, dtype=np.float32),
        xs + flow[..., 0],
        ys + flow[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def visible(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(H,W) bool: pixels of A that are visible in B, for ``f``: A->B and ``g``: B->A (module doc)."""
    g_w = warp(g, f)
    fb = f + g_w
    mag = lambda v: v[..., 0] ** 2 + v[..., 1] ** 2  # noqa: E731 - Lai et al.'s squared magnitude
    occluded = mag(fb) > 0.01 * (mag(f) + mag(g_w)) + 0.5
    du = np.zeros_like(f)
    dv = np.zeros_like(f)
    du[:, :-1] = f[:, :-1] - f[:, 1:]
    dv[:-1, :] = f[:-1, :] - f[1:, :]
    occluded |= (du**2 + dv**2).sum(-1) > 0.01 * mag(f) + 0.002
    h, w = f.shape[:2]
    xs, ys = _grid(h, w)
    tx, ty = xs + f[..., 0], ys + f[..., 1]
    occluded |= (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
    return ~occluded


def warp_error(a: np.ndarray, b: np.ndarray, f: np.ndarray, mask: np.ndarray) -> float | None:
    """E_warp of one pair: frames ``a`` (t) and ``b`` (t+1) as (H,W,3) float in [0,1], ``f`` the flow
    t->t+1 and ``mask`` = ``visible(f, g)``; None when no pixel is visible."""
    n = int(mask.sum())
    if n == 0:
        return None
    diff = (np.asarray(a, np.float32) - warp(b, f))[mask]
    return float(np.square(diff).sum() / n)
