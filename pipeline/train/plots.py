"""Pictures of a run: the sample grid (content | style | output) and the loss curve, drawn with Pillow."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from pipeline.codec import encode_image, to_array
from pipeline.imaging import resize


def sample_grid(content: Tensor, style: Tensor, output: Tensor, *, gap: int = 4) -> bytes:
    """PNG of one row per sample: content | style | output; all (N,3,S,S) in [0,1] (style may be (1,...))."""
    n, _, h, w = content.shape
    style = style.expand(n, -1, -1, -1) if style.shape[0] == 1 else style
    style = resize(style, (h, w))
    canvas = np.full((n * h + (n + 1) * gap, 3 * w + 4 * gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        for j, images in enumerate((content, style, output)):
            top, left = gap + i * (h + gap), gap + j * (w + gap)
            canvas[top : top + h, left : left + w] = to_array(images[i].clamp(0, 1))
    return encode_image(canvas, "png")


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_curve_png(rows: list[dict[str, float]], *, title: str = "training losses", size=(900, 520)) -> bytes:
    """A log-scale line chart of every loss column over steps (moving average), drawn with Pillow."""
    columns = [k for k in rows[0] if k not in ("step", "lr", "seconds")]
    steps = [r["step"] for r in rows]
    window = max(1, len(rows) // 50)
    series = {c: _smooth([max(r.get(c, math.nan), 1e-12) for r in rows], window) for c in columns}
    values = [v for s in series.values() for v in s if math.isfinite(v) and v > 0]
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    hi = hi if hi > lo else lo + 1
    width, height = size
    left, right, top, bottom = 70, 150, 40, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 12), title, fill="black")
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    draw.rectangle((x0, y0, x1, y1), outline="black")
    s_min, s_max = min(steps), max(steps)
    span = max(s_max - s_min, 1)

    def xy(step: float, value: float) -> tuple[float, float]:
        x = x0 + (step - s_min) / span * (x1 - x0)
        y = y1 - (math.log10(value) - lo) / (hi - lo) * (y1 - y0)
        return x, y

    for decade in range(lo, hi + 1):
        _, y = xy(s_min, 10.0**decade)
        draw.line((x0, y, x1, y), fill=(225, 225, 225))
        draw.text((8, y - 6), f"1e{decade}", fill="black")
    for k in range(5):
        step = s_min + span * k / 4
        x, _ = xy(step, 10.0**lo)
        draw.text((x - 10, y1 + 8), f"{int(step)}", fill="black")
    draw.text(((x0 + x1) // 2 - 12, height - 22), "step", fill="black")
    for i, (name, ys) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        points = [xy(s, v) for s, v in zip(steps, ys, strict=True) if math.isfinite(v) and v > 0]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.line((x1 + 12, y0 + 12 + 18 * i, x1 + 32, y0 + 12 + 18 * i), fill=colour, width=3)
        draw.text((x1 + 38, y0 + 6 + 18 * i), f"{name} {ys[-1]:.3g}", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def window_means(values: list[float], k: int) -> tuple[float, float]:
    """(mean of the first k, mean of the last k): how tests and reports judge that a loss fell."""
    if len(values) < 2 * k:
        raise ValueError(f"need at least {2 * k} values to compare windows of {k}, got {len(values)}")
    return float(np.mean(values[:k])), float(np.mean(values[-k:]))
