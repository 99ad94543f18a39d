"""The report's video section: a strip of frames per video (input above output) and its E_warp.

Only the shown videos are read, a few frames each (``VideoReader.frames`` seeks to each one), so the
section costs the same for a 10-second clip and a 2-hour film. No torch.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline import layout

STRIP_FRAMES = 6
STRIP_HEIGHT = 90  # px per row
MAX_VIDEOS = 12


def _frames_at(path: str, count: int) -> list[np.ndarray]:
    from pipeline.media.video import VideoReader

    with VideoReader(path) as reader:
        n = reader.info.frames
        picks = sorted({round(i * (n - 1) / max(1, count - 1)) for i in range(count)})
        out = []
        for k in picks:
            got = next(iter(reader.frames(k, k + 1)), None)
            if got is not None:
                out.append(got.array)
        return out


def frame_strip(source: str, output: str, *, frames: int = STRIP_FRAMES, height: int = STRIP_HEIGHT) -> bytes:
    """PNG bytes: ``frames`` evenly spaced frames of ``source`` in a row, the same frames of ``output`` below."""
    from PIL import Image

    rows = [_frames_at(source, frames), _frames_at(output, frames)]
    gap = 2
    tiles = [
        [Image.fromarray(a).resize((max(1, round(a.shape[1] * height / a.shape[0])), height)) for a in r] for r in rows
    ]
    width = max(sum(t.width for t in r) + gap * (len(r) - 1) for r in tiles)
    sheet = Image.new("RGB", (width, 2 * height + gap), (255, 255, 255))
    for y, r in enumerate(tiles):
        x = 0
        for t in r:
            sheet.paste(t, (x, y * (height + gap)))
            x += t.width + gap
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@contextlib.contextmanager
def _local(uri: str, storage_options: dict | None, storage: Any = None) -> Iterator[str]:
    """A local path for a source URI (or, with ``storage``, an output key)."""
    from pipeline.storage import local_copy, open_fs

    fs, path = (storage.fs, storage._path(uri)) if storage is not None else open_fs(uri, storage_options)
    with local_copy(fs, path) as local:
        yield local


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and v == v else "n/a"


def section(storage: Any, rows: list[dict[str, Any]], options: dict[str, Any] | None, total: int) -> str:
    """HTML for up to ``MAX_VIDEOS`` ok video rows (``total`` is how many there are); sources are read with
    ``options`` (the caller's, ``report_images.source_options``)."""
    if not total:
        return ""
    cells = []
    for r in rows[:MAX_VIDEOS]:
        try:
            with (
                _local(r["source_uri"], options) as src,
                _local(layout.relative_key(storage.root_uri, r["output_uri"]), None, storage) as out,
            ):
                strip = "data:image/png;base64," + base64.b64encode(frame_strip(src, out)).decode()
            picture = f'<img class="strip" src="{strip}" alt="frames of {html.escape(r["image_id"])}">'
        except Exception:  # noqa: BLE001 - a gone or unreadable video gets a placeholder, never a crash
            picture = '<div class="missing">frames missing</div>'
        facts = (
            f"E_warp {_num(r.get('ewarp'), '.5f')} · fidelity {_num(r.get('fidelity'), '.4f')} · "
            f"{r.get('frames')} frames at {html.escape(str(r.get('frame_rate') or ''))} fps · "
            f"{_num(r.get('seconds_per_frame'), '.3f')} s/frame"
        )
        cells.append(
            f"<figure class='video'>{picture}<figcaption>{html.escape(r['image_id'])}<br><small>{facts}"
            "</small></figcaption></figure>"
        )
    shown = f"the first {len(cells)} of {total:,}" if total > len(cells) else f"all {total:,}"
    return (
        f"<h2>Videos ({total:,})</h2><p>{shown} ok videos: input frames above output frames; E_warp (Lai et al. "
        "2018, lower is steadier) beside the fidelity to the per-frame stylization</p>"
        f"<style>figure.video{{max-width:none;display:block;text-align:left}} img.strip{{height:auto;"
        f"max-width:100%}}</style><div class='videos'>{''.join(cells)}</div>"
    )
