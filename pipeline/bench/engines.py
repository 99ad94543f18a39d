"""Engine and format choices measured side by side: what the job defaults were picked from.

``python -m pipeline.bench.engines`` prints the median milliseconds per image of
- dumoulin at 1024x683 (batch 1, this machine's threads) in torch fp32, torch with channels-last
  input, torch under bf16 autocast, onnxruntime on the original ONNX file, and ``torch.compile``
  (inductor, from an empty cache; with the first call's seconds at that size and three more);
- the metrics VGG (hed-vgg16 to relu4_1, batch 8) at 256 and 128 px in fp32, channels-last and
  channels-last + bf16;
- PNG encoding of a 1200x800 stylized photo at zlib levels 1, 3 and 6, with the bytes written.
"""

from __future__ import annotations

import io
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image


def median_ms(fn: Callable[[], object], repeats: int = 5, per: int = 1) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000 / per, 1)


def dumoulin_rows() -> dict[str, float]:
    from pipeline.models import create
    from pipeline.models.base import Style
    from pipeline.models.engines import with_engine

    x = torch.rand(1, 3, 683, 1024)
    styles = [Style(index=7)]
    model = create("dumoulin", device="cpu")
    rows = {"torch fp32": median_ms(lambda: model(x, styles))}
    xc = x.contiguous(memory_format=torch.channels_last)
    rows["torch channels-last input"] = median_ms(lambda: model(xc, styles))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows["torch bf16 autocast"] = median_ms(lambda: model(x, styles))
    ort = with_engine(create("dumoulin", device="cpu"), "onnxruntime", threads=torch.get_num_threads())
    rows["onnxruntime"] = median_ms(lambda: ort(x, styles))
    rows.update(compile_rows(x, styles))
    return rows


def compile_rows(x: torch.Tensor, styles: list) -> dict[str, float]:
    """``torch.compile`` (inductor) with an empty compile cache: the first call's seconds, the median
    ms after it, and the first call's seconds at three more sizes (each new size may compile again:
    what an archive of mixed sizes would pay in every actor, the reason no engine setting uses it)."""
    import os
    import tempfile

    from pipeline.models import create

    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="stylize-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read at each compile: a cold cache, as on a new machine
        compiled = create("dumoulin", device="cpu")
        compiled.net = torch.compile(compiled.net)
        for i, shape in enumerate([tuple(x.shape[-2:]), (427, 640), (480, 640), (640, 427)]):
            t0 = time.perf_counter()
            compiled(torch.rand(1, 3, *shape), styles)
            rows[f"torch.compile first call at {shape[1]}x{shape[0]} (s)"] = round(time.perf_counter() - t0, 1)
            if i == 0:
                rows["torch.compile"] = median_ms(lambda: compiled(x, styles))
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    return rows


def vgg_rows() -> dict[str, float]:
    from pipeline.models.vgg import load_encoder

    layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    enc = load_encoder("hed-vgg16", last="relu4_1")
    rows = {}
    for h, w in ((170, 256), (85, 128)):
        x = torch.rand(8, 3, h, w)
        rows[f"{w} px fp32"] = median_ms(lambda x=x, enc=enc: enc(x, layers=layers), per=8)
        cl = enc.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        rows[f"{w} px channels-last"] = median_ms(lambda cl=cl, xc=xc: cl(xc, layers=layers), per=8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rows[f"{w} px channels-last bf16"] = median_ms(lambda cl=cl, xc=xc: cl(xc, layers=layers), per=8)
        enc = enc.to(memory_format=torch.contiguous_format)
    return rows


def png_rows() -> dict[str, list[float]]:
    import skimage.data

    from pipeline.codec import to_array, to_tensor
    from pipeline.models import create
    from pipeline.models.base import Style

    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((1200, 800)))
    with torch.inference_mode():
        out = to_array(create("dumoulin", device="cpu")(to_tensor(photo), [Style(index=7)]))
    image = Image.fromarray(out)
    rows = {}
    for level in (1, 3, 6):
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=level)
        ms = median_ms(lambda level=level: image.save(io.BytesIO(), format="PNG", compress_level=level), repeats=3)
        rows[f"level {level}"] = [ms, len(buf.getvalue())]
    return rows


def main() -> None:
    with torch.inference_mode():
        print(json.dumps({"threads": torch.get_num_threads(), "dumoulin_1024x683_ms": dumoulin_rows()}))
        print(json.dumps({"metrics_vgg_ms_per_image": vgg_rows()}))
    print(json.dumps({"png_1200x800_ms_bytes": png_rows()}))


if __name__ == "__main__":
    main()
