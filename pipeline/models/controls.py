"""Runtime controls shared by every family: resolution, colour preservation, masks, tiling.

``stylize`` is the one entry point for every model call: the CLI, the batch worker, videos and the
benchmarks call it, with one style list for the whole batch or one per image (a call that mixes styles
goes through the family's ``forward_each`` in here, so every control below applies to it alike, and each
image comes out as it would alone). The family's own ``forward`` does alpha and style mixing (their
meaning differs per method: see each family's docstring); everything here works on images and so is the
same for all:

- styles are prepared once per model (so once per actor): each style image is moved to the model's
  device and capped at the family's ``style_side`` once, and families that encode style images (adain,
  wct, sanet, ghiasi) encode it once, keyed by the style's ``token`` (a hash of its pixels) rather than
  the tensor object (``Stylizer.prepare_style``, ``Stylizer.style_features``; a few recent styles kept).
  The one exception is colour preservation, whose styles are recoloured for each photo and so encoded
  on every call.

- ``preserve_color="luminance"``: transfer on luminance only (Gatys et al. 2016, "Preserving
  colour in neural artistic style transfer"): content and styles go in as grey luminance
  (the styles' luminance matched to each photo's own mean/std), and the output's luminance is
  recombined with the content's own chroma (YCbCr, BT.601), so the photo's colours stay.
- ``preserve_color="histogram"``: each style image's colour mean and covariance are matched to
  each photo's before stylizing (same paper). Index/fixed-style networks have no style image,
  so for them the output's colour statistics are matched to the content's instead.
- masks: ``(B|1, K, H, W)``, one soft mask per style. Families with ``native_masks`` blend
  inside the network (features); for the others each style is rendered and composited.
- ``max_side``: cap the longer side (the output is then that size; ``imaging.resize_max_side``);
  default keeps the size.
- ``style_scale``: the longer side (px) at which strokes are painted, so a 4096 px photo looks as
  stylized as a 1024 px one. A photo larger than it is stylized at that working size (every style,
  the native masks and alpha there) and brought back to its own size with ``upsample.guided_upsample``,
  which takes the detail from the full-size photo; masks then composite, pixel-space alpha blends
  and colour preservation recombine at full size. Photos at or below it, and ``"native"``, are
  stylized at their own size (strokes fixed in pixels). Families with ``own_style_scale`` (gatys)
  get the working side instead and use it in their own coarse-to-fine schedule.
- ``tile_pixels``: feed-forward families stylize images above this many pixels in
  overlapping tiles, bounding peak memory. Tiles overlap by at least ``TILE_OVERLAP`` px; in
  each overlap the ``TILE_CONTEXT`` px nearest a tile's edge are dropped and the rest is
  feathered (linear ramps), so a network that looks at most ``TILE_CONTEXT`` px around each
  pixel gives the untiled result exactly, and deeper ones blend without visible seams.
  (Instance-norm statistics are per tile, so a normalising network still differs a little.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import Tensor

from pipeline.errors import ConfigError, InputError
from pipeline.imaging import luminance, resize, resize_masks, resize_max_side, rgb_to_ycbcr, ycbcr_to_rgb
from pipeline.models.base import Style, Stylizer, check_images
from pipeline.models.upsample import guided_upsample
from pipeline.scale import DEFAULT_STYLE_SCALE, DEFAULT_TILE_PIXELS, StyleScale, parse_style_scale

ColorMode = Literal["none", "luminance", "histogram"]
COLOR_MODES: tuple[str, ...] = ("none", "luminance", "histogram")
# consecutive tiles share at least this many px; the outer TILE_CONTEXT px of each get zero weight
TILE_OVERLAP = 64
TILE_CONTEXT = 16
PerImage = list[list[Style]]  # one style list per image of a batch


def _grey_matched(y: Tensor, ref_y: Tensor) -> Tensor:
    """Luminance ``y`` with its mean/std moved to those of ``ref_y`` (one photo's), as 3 channels."""
    y = (y - y.mean()) / (y.std() + 1e-6) * ref_y.std() + ref_y.mean()
    return y.clamp(0, 1).expand(-1, 3, -1, -1)


def match_color(source: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """Recolour ``source`` (N,3,H,W) so its RGB mean and covariance equal ``target``'s (pooled)."""

    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.permute(1, 0, 2, 3).reshape(3, -1).double()
        mu = flat.mean(1, keepdim=True)
        centred = flat - mu
        return mu, centred @ centred.T / centred.shape[1] + eps * torch.eye(3, dtype=flat.dtype, device=x.device)

    def sqrtm(c: Tensor, inverse: bool = False) -> Tensor:
        vals, vecs = torch.linalg.eigh(c)
        vals = vals.clamp_min(eps)
        return vecs @ torch.diag(vals.rsqrt() if inverse else vals.sqrt()) @ vecs.T

    mu_s, cov_s = stats(source)
    mu_t, cov_t = stats(target)
    transform = sqrtm(cov_t) @ sqrtm(cov_s, inverse=True)
    flat = source.permute(1, 0, 2, 3).reshape(3, -1).double()
    out = transform @ (flat - mu_s) + mu_t
    return out.reshape(3, source.shape[0], *source.shape[2:]).permute(1, 0, 2, 3).to(source.dtype).clamp(0, 1)


def check_masks(masks: Tensor, content: Tensor, n_styles: int) -> Tensor:
    """Validate (B|1,K,H,W) masks against the content and normalise them to sum to 1 per pixel."""
    if masks.dim() != 4 or masks.shape[1] != n_styles:
        raise InputError(f"masks must be (B,{n_styles},H,W), one per style; got {tuple(masks.shape)}")
    if masks.shape[-2:] != content.shape[-2:]:
        raise InputError(
            f"masks are {masks.shape[-1]}x{masks.shape[-2]} but the content is {content.shape[-1]}x{content.shape[-2]}"
        )
    if masks.shape[0] not in (1, content.shape[0]):
        raise InputError(f"masks batch {masks.shape[0]} does not match content batch {content.shape[0]}")
    masks = masks.to(content).clamp_min(0)
    total = masks.sum(1, keepdim=True)
    if (total <= 0).any():
        raise InputError("masks leave some pixels with no style; cover every pixel (or give a background --style)")
    return (masks / total).expand(content.shape[0], -1, -1, -1)


def _feather(length: int, overlap: int, first: bool, last: bool, device: torch.device) -> Tensor:
    """1-D blending weights for one tile: zero over the ``TILE_CONTEXT`` px at each inner edge, then a
    linear ramp up to 1 across the rest of the overlap, flat inside.

    A tile's edge pixels were computed next to padding instead of the real neighbours, so they get no
    say; a model that looks at most ``TILE_CONTEXT`` px around a pixel is then reproduced exactly, and
    wider receptive fields are feathered across the overlap.
    """
    w = torch.ones(length, device=device)
    margin = min(TILE_CONTEXT, overlap // 4)
    ramp = torch.linspace(0, 1, overlap - margin + 1, device=device)[1:]
    edge = torch.cat([torch.zeros(margin, device=device), ramp])[:length]
    if not first and overlap:
        w[: len(edge)] = edge
    if not last and overlap:
        w[-len(edge) :] = torch.minimum(w[-len(edge) :], edge.flip(0))
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (n - 1)
    return [round(i * step) for i in range(n)]


def _signature(styles: list[Style]) -> tuple[tuple[str, float], ...]:
    """What a style list does, for grouping images that share it: tokens and weights. A one-call style
    (token None) is its own group."""
    return tuple((s.token if s.token is not None else f"id:{id(s)}", s.weight) for s in styles)


def _network(
    model: Stylizer, content: Tensor, styles: PerImage, *, alpha: float, masks: Tensor | None, **extra: Any
) -> Tensor:
    """The model on ``content`` (B,3,H,W) with ``styles[i]`` for image i: one ``forward`` where every image
    has the same styles, one ``forward_each`` pass where the family conditions per sample, else one
    ``forward`` per group of images with equal styles. Each image gets what it would get alone."""
    groups: dict[tuple[tuple[str, float], ...], list[int]] = {}
    for i, own in enumerate(styles):
        groups.setdefault(_signature(own), []).append(i)
    if len(groups) == 1:
        return model(content, styles[0], alpha=alpha, masks=masks, **extra)
    if masks is None and not extra and model.per_sample_styles:
        return model.forward_each(content, styles, alpha=alpha)
    out = torch.empty_like(content)
    for idx in groups.values():
        own_masks = masks[idx] if masks is not None else None
        out[idx] = model(content[idx], styles[idx[0]], alpha=alpha, masks=own_masks, **extra)
    return out


def tiled(
    model: Stylizer,
    content: Tensor,
    styles: PerImage,
    *,
    alpha: float,
    masks: Tensor | None,
    tile_pixels: int,
    overlap: int = TILE_OVERLAP,
) -> Tensor:
    """Stylize in overlapping square-ish tiles of at most ``tile_pixels`` and feather them together."""
    b, _, h, w = content.shape
    tile = max(2 * overlap + 32, int(math.sqrt(tile_pixels)))
    out = torch.zeros_like(content)
    acc = torch.zeros(1, 1, h, w, device=content.device, dtype=content.dtype)
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    for iy, y0 in enumerate(ys):
        for ix, x0 in enumerate(xs):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            patch_masks = masks[..., y0:y1, x0:x1] if masks is not None else None
            patch = _network(model, content[..., y0:y1, x0:x1], styles, alpha=alpha, masks=patch_masks)
            wy = _feather(y1 - y0, overlap, iy == 0, iy == len(ys) - 1, content.device)
            wx = _feather(x1 - x0, overlap, ix == 0, ix == len(xs) - 1, content.device)
            weight = (wy[:, None] * wx[None, :]).to(content.dtype)
            out[..., y0:y1, x0:x1] += patch * weight
            acc[..., y0:y1, x0:x1] += weight
    return out / acc


def working_size(size: tuple[int, int], style_scale: StyleScale) -> tuple[int, int] | None:
    """The (H, W) to stylize an image of ``size`` at: its longer side brought to ``style_scale``, aspect
    kept (as ``resize_max_side``). ``None`` where the image is stylized as it is: ``"native"``, or no
    larger than the style scale (small photos are never enlarged for the network)."""
    h, w = size
    if style_scale == "native" or max(h, w) <= style_scale:
        return None
    scale = style_scale / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _render(
    model: Stylizer,
    content: Tensor,
    styles: PerImage,
    *,
    alpha: float,
    masks: Tensor | None,
    tile_pixels: int | None,
    work: tuple[int, int] | None,
) -> Tensor:
    """One rendering under the style scale: the network at the working size ``work`` (None: at the
    content's own size), the result brought back to the content's size edge-aware."""
    if work is None:
        return _run(model, content, styles, alpha=alpha, masks=masks, tile_pixels=tile_pixels)
    if model.own_style_scale:
        return _network(model, content, styles, alpha=alpha, masks=masks, working_side=max(work))
    small_masks = resize_masks(masks, work) if masks is not None else None
    return _upsampled(
        model,
        content,
        work,
        alpha,
        lambda small, a: _run(model, small, styles, alpha=a, masks=small_masks, tile_pixels=tile_pixels),
    )


def _upsampled(
    model: Stylizer, content: Tensor, work: tuple[int, int], alpha: float, network: Callable[[Tensor, float], Tensor]
) -> Tensor:
    """``network(content at the working size, alpha)``, brought back to ``content``'s size edge-aware. A
    pixel-space alpha mixes in the full-size photo, not its working-size copy (which has lost the detail)."""
    blend = model.pixel_alpha and alpha < 1.0
    out = guided_upsample(network(resize(content, work), 1.0 if blend else alpha), content)
    return alpha * out + (1.0 - alpha) * content if blend else out


def _run(
    model: Stylizer,
    content: Tensor,
    styles: PerImage,
    *,
    alpha: float,
    masks: Tensor | None,
    tile_pixels: int | None,
) -> Tensor:
    h, w = content.shape[-2:]
    if model.feed_forward and tile_pixels and h * w > tile_pixels:
        return tiled(model, content, styles, alpha=alpha, masks=masks, tile_pixels=tile_pixels)
    return _network(model, content, styles, alpha=alpha, masks=masks)


def per_image_styles(styles: list[Style] | PerImage, batch: int) -> PerImage:
    """``styles`` as one list per image: a flat list is every image's (the same list object for all)."""
    if styles and all(isinstance(s, list) for s in styles):
        if len(styles) != batch:
            raise InputError(f"give one style list per image: {len(styles)} lists for a batch of {batch}")
        return list(styles)  # type: ignore[arg-type]
    if not all(isinstance(s, Style) for s in styles):
        raise ConfigError("styles must be a list of Style, or one list of Style per image")
    return [styles] * batch  # type: ignore[list-item]


def _colour_styles(styles: PerImage, content: Tensor, preserve_color: ColorMode) -> PerImage:
    """Each image's style images recoloured for colour preservation, from that image alone (so a photo's
    result does not depend on the batch it is in). These styles depend on the photo, so they are built
    for this call only (``key=None``: the style caches skip them)."""
    if preserve_color == "none":
        return styles
    out = []
    for i, own in enumerate(styles):
        photo = content[i : i + 1]
        restyled = []
        for s in own:
            if s.image is None:
                restyled.append(s)
            elif preserve_color == "luminance":
                restyled.append(replace(s, image=_grey_matched(luminance(s.image), luminance(photo)), key=None))
            else:
                restyled.append(replace(s, image=match_color(s.image, photo), key=None))
        out.append(restyled)
    return out


def stylize(
    model: Stylizer,
    content: Tensor,
    styles: list[Style] | PerImage,
    *,
    alpha: float = 1.0,
    preserve_color: ColorMode = "none",
    masks: Tensor | None = None,
    max_side: int | None = None,
    tile_pixels: int | None = DEFAULT_TILE_PIXELS,
    style_scale: StyleScale = DEFAULT_STYLE_SCALE,
) -> Tensor:
    """Stylize content ``(B,3,H,W)`` in [0,1] with every control applied; returns ``(B,3,H',W')`` in [0,1].

    ``styles``: one list for every image, or one list per image (a call that mixes styles; each image
    then gets exactly what it would get alone, every control included). ``H', W'`` equal ``H, W`` unless
    ``max_side`` caps them. ``masks`` ``(B|1,K,H,W)`` assigns each image's K styles to regions (soft masks,
    normalised per pixel). ``style_scale``: a longer side in px or ``"native"`` (see the module docstring).
    """
    check_images(content)
    if preserve_color not in COLOR_MODES:
        raise ConfigError(f"preserve_color must be one of {', '.join(COLOR_MODES)}, got {preserve_color!r}")
    if max_side is not None and max_side < 0:
        raise ConfigError(f"max_side must be a positive number of pixels, got {max_side}")
    style_scale = parse_style_scale(style_scale)
    per_image = per_image_styles(styles, content.shape[0])
    for own in {id(own): own for own in per_image}.values():
        model.check_styles(own)
    device = model.device
    content = resize_max_side(content.to(device), max_side)
    work = working_size(tuple(content.shape[-2:]), style_scale)
    if masks is not None:
        counts = {len(own) for own in per_image}
        if len(counts) != 1:
            raise InputError(f"masks need the same number of styles for every image, got {sorted(counts)}")
        masks = masks.to(device)
        if masks.shape[-2:] != content.shape[-2:] and max_side:
            masks = resize_masks(masks, tuple(content.shape[-2:]))
        masks = check_masks(masks, content, counts.pop())
    # each style's image on the model's device, capped, once per actor (Stylizer.prepare_style)
    prepared = {id(own): [model.prepare_style(s, device=device) for s in own] for own in per_image}
    per_image = [prepared[id(own)] for own in per_image]

    original = content
    per_image = _colour_styles(per_image, content, preserve_color)
    if preserve_color == "luminance":
        content = luminance(content).expand(-1, 3, -1, -1)

    grad = torch.enable_grad if not model.feed_forward else torch.no_grad
    with grad():
        if masks is not None and not model.native_masks:
            out = torch.zeros_like(content)
            for k in range(masks.shape[1]):
                # each style rendered (at the working size, then full size), composited with the full-size masks
                kth = {id(own): [replace(own[k], weight=1.0)] for own in per_image}
                rendered = _render(
                    model,
                    content,
                    [kth[id(own)] for own in per_image],
                    alpha=alpha,
                    masks=None,
                    tile_pixels=tile_pixels,
                    work=work,
                )
                out += masks[:, k : k + 1] * rendered
        else:
            out = _render(model, content, per_image, alpha=alpha, masks=masks, tile_pixels=tile_pixels, work=work)
    out = out.detach()

    if preserve_color == "luminance":
        ycc = rgb_to_ycbcr(original)
        out = ycbcr_to_rgb(torch.cat([luminance(out), ycc[:, 1:]], 1))
    elif preserve_color == "histogram":
        # networks without a style image to recolour: the output's colours are matched to the photo's
        out = torch.stack(
            [
                match_color(o[None], c[None])[0] if all(s.image is None for s in own) else o
                for o, c, own in zip(out, original, per_image, strict=True)
            ]
        )
    return out.clamp(0, 1)
