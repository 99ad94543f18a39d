"""Training images from a manifest: endless random batches, bad rows skipped and counted.

Each image is resized so its shorter side is ``resize_to`` and a random ``image_size`` square is
cropped from it, as in the papers (AdaIN/SANet: 512 then 256 crops; Johnson: 256). A row whose
object is missing or does not decode is skipped once, counted in ``skipped`` with its reason, and
never read again; only a manifest with no usable row at all is an error.

Sampling is counter-based: the ``i``-th image a sampler draws depends only on its seed, ``i`` and
the manifest, never on what was drawn before, so a resumed run continues with exactly the batches
an uninterrupted run would have drawn.

Decoded, resized images are kept in memory up to ``cache_images`` of them, so a small set (a
style manifest, a demo run) is decoded once; larger sets are re-read from storage each epoch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from pipeline.codec import decode_image, to_tensor
from pipeline.errors import ConfigError, ManifestError, StylizeError
from pipeline.storage import ALLOWED_SCHEMES, read_source


def resize_shorter(array: np.ndarray, size: int) -> np.ndarray:
    """(H,W,3) uint8 -> (H',W',3) uint8 whose shorter side is ``size`` (aspect kept)."""
    h, w = array.shape[:2]
    scale = size / min(h, w)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new == (w, h):
        return array
    from pipeline.codec import to_array, to_tensor
    from pipeline.imaging import resize

    return to_array(resize(to_tensor(array), (new[1], new[0])))


def read_style_image(uri: str, size: int, allowed_schemes: Sequence[str] = tuple(ALLOWED_SCHEMES)) -> Tensor:
    """One style image, shorter side ``size``, (1,3,h,w) in [0,1]; raises ``StorageError``/``DecodeError``."""
    return to_tensor(resize_shorter(decode_image(read_source(uri, allowed_schemes)).array, size))


def random_crop(array: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = array.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return array[top : top + size, left : left + size]


def to_batch(arrays: list[np.ndarray]) -> Tensor:
    """list of (S,S,3) uint8 -> (B,3,S,S) float32 in [0,1]."""
    stacked = np.stack(arrays).astype(np.float32) / 255.0
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


class ImageSampler:
    """Endless random ``(B,3,S,S)`` batches in [0,1] from a list of image URIs.

    Draw ``i`` (counted from ``start``) takes row ``perm_e[i % n]``, where ``perm_e`` is epoch
    ``e = i // n``'s permutation of all ``n`` rows, and its crop from a generator keyed on ``i``;
    both generators are keyed on ``seed`` too. A bad row is replaced by the first good one of a
    sequence keyed on ``i``, so later draws do not shift. ``skipped`` counts bad rows, ``reasons``
    keeps the first few messages. Thread-safe for one consumer plus the prefetcher.
    """

    def __init__(
        self,
        uris: Sequence[str],
        *,
        image_size: int,
        resize_to: int,
        seed: Sequence[int],
        start: int = 0,
        cache_images: int = 512,
        allowed_schemes: Sequence[str] = tuple(ALLOWED_SCHEMES),
        name: str = "content",
        flip: bool = False,
    ) -> None:
        if resize_to < image_size:
            raise ConfigError(f"resize_to ({resize_to}) must be at least image_size ({image_size})")
        if not uris:
            raise ManifestError(f"the {name} manifest has no rows")
        self.uris = list(uris)
        self.image_size = image_size
        self.resize_to = resize_to
        self.seed = [int(s) for s in seed]
        self.drawn = start
        self.cache_images = cache_images
        self.allowed_schemes = tuple(allowed_schemes)
        self.name = name
        self.flip = flip
        self.bad: set[int] = set()
        self.reasons: list[str] = []
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._perm: tuple[int, np.ndarray] | None = None  # (epoch, its permutation)
        self._lock = threading.Lock()

    @property
    def skipped(self) -> int:
        return len(self.bad)

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([*self.seed, *key])

    def _load(self, index: int) -> np.ndarray | None:
        if index in self.bad:
            return None
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        uri = self.uris[index]
        try:
            array = resize_shorter(decode_image(read_source(uri, self.allowed_schemes)).array, self.resize_to)
        except StylizeError as exc:  # DecodeError, StorageError: a bad row, never a failed run
            self.bad.add(index)
            if len(self.reasons) < 5:
                self.reasons.append(f"{uri}: {exc}")
            return None
        if self.cache_images > 0:
            self._cache[index] = array
            if len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        return array

    def _row(self, i: int) -> int:
        epoch, position = divmod(i, len(self.uris))
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, self._rng(0, epoch).permutation(len(self.uris)))
        return int(self._perm[1][position])

    def sample(self) -> np.ndarray:
        """The next (S,S,3) uint8 crop; bad rows are skipped."""
        with self._lock:
            i = self.drawn
            self.drawn += 1
            index, attempt = self._row(i), 0
            while (array := self._load(index)) is None:
                if len(self.bad) == len(self.uris):
                    first = self.reasons[0] if self.reasons else "no reason recorded"
                    n = len(self.uris)
                    raise ManifestError(f"no usable image in the {self.name} manifest: all {n} rows failed ({first})")
                attempt += 1
                index = int(self._rng(2, i, attempt).integers(len(self.uris)))
            rng = self._rng(1, i)
            crop = random_crop(array, self.image_size, rng)
            # drawn after the crop's offsets, so crops without flips are the same as before
            return crop[:, ::-1] if self.flip and rng.random() < 0.5 else crop

    def batch(self, batch_size: int) -> Tensor:
        """(B,3,S,S) float32 in [0,1]."""
        return to_batch([self.sample() for _ in range(batch_size)])


class Prefetcher:
    """Builds the next batch(es) in a background thread while the current step runs."""

    def __init__(self, samplers: Sequence[ImageSampler | None], batch_size: int) -> None:
        self.samplers = samplers
        self.batch_size = batch_size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="train-data")
        self._next: Future | None = None

    def _make(self) -> list[Tensor | None]:
        return [s.batch(self.batch_size) if s is not None else None for s in self.samplers]

    def next(self) -> list[Tensor | None]:
        current = self._next.result() if self._next is not None else self._make()
        self._next = self._pool.submit(self._make)
        return current

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def shard(uris: Sequence[str], rank: int, world_size: int) -> list[str]:
    """This worker's rows (every ``world_size``-th); a set smaller than the world is shared whole."""
    if world_size <= 1 or len(uris) < world_size:
        return list(uris)
    return list(uris[rank::world_size])
