"""Video throughput: frames/s at 640x360 for dumoulin and ghiasi, with and without `consistency: flow`,
and the share of the time spent on flow (DIS both ways, occlusion, warping and the E_warp measure).

    python -m pipeline.bench.video [--frames 48] [--photo PATH] [--strip docs/images/video-strip.png]

The input is a 640x360 window panning across a photo (``--photo``; default the repository's eval photo
when present, else a seeded texture) by 3 px a frame, encoded at 30000/1001 fps. ``--strip`` also
writes the frame strip the README shows (input above output, dumoulin with flow).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from fractions import Fraction

import numpy as np

from pipeline.media.video import VideoWriter
from pipeline.temporal import CONSISTENCY_MODES
from pipeline.video_render import VideoSettings, frame_stylizer, render

SIZE = (640, 360)
RATE = Fraction(30000, 1001)
STEP = 3  # px per frame
DEFAULT_PHOTO = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "eval", "content", "chicago.jpg")
STYLES = {"dumoulin": "7", "ghiasi": os.path.join(os.path.dirname(DEFAULT_PHOTO), "..", "style")}


def pan_video(path: str, frames: int, photo: str | None) -> None:
    """A ``SIZE`` window panning right across ``photo`` (scaled to fit the pan), written as H.264."""
    from PIL import Image

    w, h = SIZE
    need = (w + STEP * frames, h)
    if photo and os.path.exists(photo):
        img = Image.open(photo).convert("RGB")
        scale = max(need[0] / img.width, need[1] / img.height)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        big = np.asarray(img)[: need[1], : need[0]]
    else:
        rng = np.random.default_rng(0)
        big = (rng.random((need[1] // 8, need[0] // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    with VideoWriter(path, w, h, RATE) as writer:
        for t in range(frames):
            writer.write(big[:h, t * STEP : t * STEP + w])


def style_for(stylizer: str) -> str:
    if stylizer == "dumoulin":
        return STYLES["dumoulin"]
    folder = STYLES["ghiasi"]
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    if not names:
        raise SystemExit(f"ghiasi needs a style image; none under {folder}")
    return os.path.join(folder, names[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--photo", default=DEFAULT_PHOTO)
    parser.add_argument("--stylizers", default="dumoulin,ghiasi")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strip", default=None, help="also write the README's frame strip (PNG) here")
    args = parser.parse_args()

    from pipeline.devices import resolve_device
    from pipeline.models.engines import load_stylizer
    from pipeline.styles import parse_style_spec

    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "pan.mp4")
        pan_video(source, args.frames, args.photo)
        print(f"input: {SIZE[0]}x{SIZE[1]}, {args.frames} frames at {RATE} fps, batch 4, device {args.device}")
        print(f"{'stylizer':10} {'consistency':12} {'frames/s':>9} {'flow share':>11} {'E_warp':>9} {'fidelity':>9}")
        for name in args.stylizers.split(","):
            model = load_stylizer(name, device=resolve_device(args.device))
            stylize = frame_stylizer(model, parse_style_spec(style_for(name)))
            stylize([np.zeros((SIZE[1], SIZE[0], 3), np.uint8)])  # warm-up: weights, engine, style encoding
            for mode in CONSISTENCY_MODES[::-1]:  # none, then flow
                out = os.path.join(tmp, f"{name}-{mode}.mp4")
                # "none" without measuring: what per-frame stylization costs on its own
                settings = VideoSettings(consistency=mode, measure=mode == "flow")
                t0 = time.perf_counter()
                result = render(source, out, stylize, settings)
                wall = time.perf_counter() - t0
                s = result.stats
                share = s.seconds_flow / wall if mode == "flow" else 0.0
                ewarp = f"{s.ewarp:.5f}" if s.ewarp is not None else "-"
                fidelity = f"{s.fidelity:.4f}" if mode == "flow" else "-"
                print(f"{name:10} {mode:12} {s.frames / wall:9.2f} {share:10.0%} {ewarp:>9} {fidelity:>9}")
                if args.strip and name == "dumoulin" and mode == "flow":
                    from pipeline.report_video import frame_strip

                    with open(args.strip, "wb") as f:
                        f.write(frame_strip(source, out, frames=4, height=100))
                    print(f"wrote {args.strip}")


if __name__ == "__main__":
    main()
