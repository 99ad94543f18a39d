"""What sharing a call costs: an image stylized at a size up to ``batching.TOLERANCE`` off its own, then
resized back, against the same image stylized at its own size.

``python -m pipeline.bench.tolerance`` prints, per photo, the mean absolute difference (0-1 scale) after
running 6 %, 11 % and 12.5 % shorter, beside the network's own jitter: the same photo shifted by one pixel.
dumoulin, style 7, max side 512, on this machine's CPU.
"""

from __future__ import annotations

import json

import numpy as np
import torch


def _photos() -> dict[str, np.ndarray]:
    from skimage import data  # a test/benchmark dependency, not a runtime one

    out = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        img = getattr(data, name)()
        out[name] = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
    return out


def main() -> None:
    from pipeline.batching import TOLERANCE
    from pipeline.codec import to_tensor
    from pipeline.imaging import fit, resize
    from pipeline.models import create
    from pipeline.models.base import Style

    model = create("dumoulin", device="cpu")
    style = [Style(index=7)]
    with torch.inference_mode():
        for name, array in _photos().items():
            x = to_tensor(fit(array, 512))
            h, w = x.shape[-2:]
            own = model(x, style)
            row: dict[str, object] = {"photo": name, "size": [int(w), int(h)]}
            for shorter in (0.06, 0.11, TOLERANCE):
                off = resize(model(resize(x, (round(h * (1 - shorter)), w)), style), (h, w))
                row[f"{shorter:.3f} shorter"] = round((off - own).abs().mean().item(), 4)
            shifted = model(x[..., 1:, 1:], style)
            row["1 px shift"] = round((shifted - own[..., 1:, 1:]).abs().mean().item(), 4)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
