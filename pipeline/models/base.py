"""The one contract every stylizer keeps.

A stylizer maps content ``(B,3,H,W)`` float in [0,1] plus a list of weighted styles to
``(B,3,H,W)`` in [0,1] at the content's own size. Subclasses implement ``transfer``;
padding to the network's stride, validation and the generic controls live here and in
``controls.py`` so each family file only holds its method.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.errors import ConfigError, InputError
from pipeline.imaging import resize_max_side

StyleKind = Literal["image", "index", "fixed"]


@dataclass(frozen=True)
class Style:
    """One weighted style.

    ``image`` is ``(1,3,h,w)`` or ``(3,h,w)`` in [0,1] for image-conditioned families;
    ``index`` selects a built-in style of a fixed-style-set network (dumoulin);
    fixed-style networks (johnson) take ``Style()`` with neither.
    """

    image: Tensor | None = None
    index: int | None = None
    weight: float = 1.0
    label: str = ""
    # the token the per-actor style caches know ``image`` by: "" means a hash of its pixels (``token``);
    # the controls set it on the styles they prepare, and None on styles built for one call only
    # (colour preservation restyles the style for each photo), which are never cached
    key: str | None = ""

    @cached_property
    def token(self) -> str | None:
        """A stable name for what this style looks like, the same for equal pixels in any tensor: ``key``, a
        hash of the image's pixels (computed once per ``Style`` object), ``index:N``, or ``fixed``; None
        where ``key`` is None (a one-call style)."""
        if self.image is None:
            return "fixed" if self.index is None else f"index:{self.index}"
        if self.key is None or self.key:
            return self.key
        pixels = self.image.detach().to("cpu", torch.float32).contiguous()
        digest = hashlib.blake2b(pixels.numpy().tobytes(), digest_size=16)
        digest.update(repr(tuple(pixels.shape)).encode())
        return f"pixels:{digest.hexdigest()}"

    def image_batch(self, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        if self.image is None:
            raise ConfigError(f"style {self.label or self.index!r} is not an image; this stylizer needs style images")
        img = self.image if self.image.dim() == 4 else self.image.unsqueeze(0)
        check_images(img, what="style image")
        # a decoded image arrives channels-last (a permuted view); families flatten features with view()
        return img.to(device=device, dtype=dtype).contiguous()


def normalized_weights(styles: list[Style]) -> list[float]:
    if not styles:
        raise ConfigError("no style given")
    weights = [float(s.weight) for s in styles]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"style weights must be non-negative and not all zero, got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


def check_images(x: Tensor, *, what: str = "content") -> None:
    """Raise ``InputError`` unless ``x`` is a float ``(B,3,H,W)`` batch."""
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{what} must be a (B,3,H,W) tensor, got {shape}")
    if not x.is_floating_point():
        raise InputError(f"{what} must be float in [0,1], got dtype {x.dtype}")
    if x.shape[-1] < 1 or x.shape[-2] < 1 or x.shape[0] < 1:
        raise InputError(f"{what} is empty: {tuple(x.shape)}")


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad the bottom/right so H and W are multiples of ``multiple``; returns the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        # reflect needs pad < size; replicate covers tiny images
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class Stylizer(nn.Module):
    """Base class: subclasses set the class attributes and implement ``transfer``.

    ``transfer(content, styles, alpha=..., masks=...)`` receives content already padded to
    ``multiple`` and must return the same spatial size. ``masks``, when given, is
    ``(B,K,H,W)`` with one soft mask per style summing to 1 over K; a family that cannot use
    masks inside the network sets ``native_masks = False`` and the controls composite outputs.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    style_kind: ClassVar[StyleKind] = "image"
    multiple: ClassVar[int] = 1
    native_masks: ClassVar[bool] = False
    feed_forward: ClassVar[bool] = True
    # what content and style tensors must hold; a family's own scale (e.g. 0-255) is applied inside
    input_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    # smallest side (px) the network can take: below it the deepest padding / pooling has nothing left
    min_px: ClassVar[int] = 1
    # alpha is a pixel blend with the content (dumoulin, johnson): under a style scale the controls blend
    # the full-size result with the full-size photo instead of the working-size copy
    pixel_alpha: ClassVar[bool] = False
    # the family applies the controls' style scale in its own schedule (gatys: coarse-to-fine), so the
    # controls pass ``working_side`` through ``forward`` to ``transfer`` instead of resizing around it
    own_style_scale: ClassVar[bool] = False

    def require_min_size(self, x: Tensor, *, what: str) -> None:
        if min(x.shape[-2:]) < self.min_px:
            side = f"{self.min_px}x{self.min_px}"
            raise InputError(f"{self.name} needs {what} of at least {side} px, got {tuple(x.shape)}")

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        raise NotImplementedError

    # styles (prepared images, their encodings) kept per model, i.e. per actor: a few recent ones
    STYLE_CACHE_SIZE: ClassVar[int] = 8
    # longest side (px) a style image is taken at, for the families that encode style images (None: as
    # given). pytorch-AdaIN's test.py resizes styles to 512 (its shorter side); capping the longer side
    # instead never enlarges a style and bounds the encoder's (and SANet's attention's) memory for any aspect
    style_side: ClassVar[int | None] = None

    def _remember(self, cache_name: str, key: Hashable | None, make: Callable[[], Any]) -> Any:
        """``make()``, kept under ``key`` in this model's LRU ``cache_name`` (a ``key`` of None: not kept)."""
        if key is None:
            return make()
        cache: OrderedDict[Hashable, Any] = self.__dict__.setdefault(cache_name, OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = cache[key] = make()
        while len(cache) > self.STYLE_CACHE_SIZE:
            cache.popitem(last=False)
        return value

    def prepare_style(self, style: Style, *, device: torch.device, dtype: torch.dtype = torch.float32) -> Style:
        """``style`` with its image as the network takes it: a contiguous ``(1,3,h,w)`` batch on ``device`` in
        ``dtype``, the longer side capped at ``style_side``, named by its ``token`` (so later lookups do not
        hash it again). Remembered per token, device and dtype: a job's batches and a video's frames share
        one prepared copy. Styles without an image come back as they are."""
        if style.image is None:
            return style
        token = style.token

        def make() -> Tensor:
            return resize_max_side(style.image_batch(device, dtype), self.style_side).contiguous()

        image = self._remember("_prepared_styles", None if token is None else (token, device, dtype), make)
        return replace(style, image=image, key=token)

    def style_features(
        self, style: Style, encode: Callable[[Tensor], Any], *, device: torch.device, dtype: torch.dtype
    ) -> Any:
        """``encode(style image)`` after the ``min_px`` check, remembered per style ``token``, device and
        dtype: a batch job, or a video, with one style encodes it once per actor. One-call styles (a
        ``key`` of None: colour preservation's per-photo restyling) are encoded every time."""
        style = self.prepare_style(style, device=device, dtype=dtype)

        def make() -> Any:
            self.require_min_size(style.image, what="style images")
            return encode(style.image)

        token = style.token
        return self._remember("_style_cache", None if token is None else (token, device, dtype), make)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def check_styles(self, styles: list[Style]) -> None:
        normalized_weights(styles)
        for s in styles:
            if self.style_kind == "image" and s.image is None:
                raise ConfigError(f"{self.name} needs style images, got style {s.label or s.index!r}")
            if self.style_kind == "index" and s.index is None:
                raise ConfigError(f"{self.name} needs built-in style indices (e.g. 7 or 3:0.5,12:0.5), got {s.label!r}")
        if self.style_kind == "fixed" and len(styles) > 1:
            raise ConfigError(f"{self.name} has one style baked into its weights; it cannot mix {len(styles)} styles")

    def forward(
        self,
        content: Tensor,
        styles: list[Style],
        *,
        alpha: float = 1.0,
        masks: Tensor | None = None,
        working_side: int | None = None,
    ) -> Tensor:
        """Stylize ``content`` (B,3,H,W) in [0,1]; returns (B,3,H,W) in [0,1] at the same size.

        ``working_side`` reaches ``transfer`` only for ``own_style_scale`` families (the controls set it)."""
        check_images(content)
        self.check_styles(styles)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        # any layout in (channels-last, permuted or sliced views), one layout out: families and
        # optimisers may flatten with view(), which needs contiguous strides
        padded, (h, w) = pad_to_multiple(content.contiguous(), self.multiple)
        if masks is not None:
            masks, _ = pad_to_multiple(masks.contiguous(), self.multiple)
        extra = {"working_side": working_side} if self.own_style_scale else {}
        out = self.transfer(padded, styles, alpha=alpha, masks=masks, **extra)
        return out[..., :h, :w].clamp(0, 1).contiguous()

    # True where ``transfer_each`` conditions every sample exactly (a batch may then mix styles)
    per_sample_styles: ClassVar[bool] = False

    def transfer_each(self, content: Tensor, styles: list[list[Style]], *, alpha: float) -> Tensor:
        """Like ``transfer`` with one style list per sample; families with ``per_sample_styles`` override it."""
        raise NotImplementedError

    def forward_each(self, content: Tensor, styles: list[list[Style]], *, alpha: float = 1.0) -> Tensor:
        """Stylize each image of ``content`` (B,3,H,W) in [0,1] with its own ``styles[i]``; (B,3,H,W) out.

        One pass where the family conditions per sample (``per_sample_styles``), else one call per
        distinct style list; either way each image gets what ``forward`` would give it alone.
        """
        check_images(content)
        if len(styles) != content.shape[0]:
            raise InputError(f"forward_each wants one style list per image: {len(styles)} for {tuple(content.shape)}")
        for s in styles:
            self.check_styles(s)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        if not self.per_sample_styles:
            out = torch.empty_like(content)
            groups: dict[int, list[int]] = {}
            for i, s in enumerate(styles):
                groups.setdefault(id(s), []).append(i)
            for idx in groups.values():
                out[idx] = self(content[idx], styles[idx[0]], alpha=alpha)
            return out
        padded, (h, w) = pad_to_multiple(content.contiguous(), self.multiple)
        return self.transfer_each(padded, styles, alpha=alpha)[..., :h, :w].clamp(0, 1).contiguous()
