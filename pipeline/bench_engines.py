"""Engine and format choices measured side by side: what the job defaults were picked from.

``python -m pipeline.bench_engines`` prints the median milliseconds per image of
- dumoulin at 1024x683 (batch 1, this machine's threads) in torch fp32, torch with channels-last
  input, torch under bf16 autocast, onnxruntime on the original ONNX file, and ``torch.compile``
  (inductor; with its first call's compile time);
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
    # inductor compiles on the first call at each new size (the seconds below): an archive of mixed sizes
    # would pay that again and again, which is why no engine setting uses it
    compiled = create("dumoulin", device="cpu")
    compiled.net = torch.compile(compiled.net)
    t0 = time.perf_counter()
    compiled(x, styles)
    rows["torch.compile first call (s)"] = round(time.perf_counter() - t0, 1)
    rows["torch.compile"] = median_ms(lambda: compiled(x, styles))
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
    with torch.no_grad():  # not inference_mode: torch.compile does not take inference tensors
        print(json.dumps({"threads": torch.get_num_threads(), "dumoulin_1024x683_ms": dumoulin_rows()}))
        print(json.dumps({"metrics_vgg_ms_per_image": vgg_rows()}))
    print(json.dumps({"png_1200x800_ms_bytes": png_rows()}))


if __name__ == "__main__":
    main()
