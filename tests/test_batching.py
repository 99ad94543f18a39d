"""Batches that fill on a real archive's mix of sizes: the planner alone, then a whole shard."""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar

import pyarrow.parquet as pq
from torch import Tensor

from pipeline import layout
from pipeline.batching import TOLERANCE, Call, fits, plan_calls
from pipeline.codec import decode_image
from pipeline.models.base import Style
from pipeline.shard import ShardWorker
from tests.pipeline_fakes import InvertStylizer, _register
from tests.pipeline_helpers import encode, job_config, photo, write_inputs, write_manifest

# an archive's sizes (W, H): 4:3 both ways, a portrait crop, 3:2 twice, a square thumbnail and a tiny portrait
SEVEN_SIZES = [(640, 480), (480, 640), (333, 517), (1024, 683), (256, 256), (1200, 800), (97, 203)]


def _fit(w: int, h: int, most: int = 512) -> tuple[int, int]:
    """(H, W) after ``max_side=most``, rounded as the codec does (close enough for the planner's tests)."""
    scale = min(1.0, most / max(w, h))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _check_cover(calls: list[Call], sizes: list[tuple[int, int]], batch_size: int) -> None:
    seen = [i for c in calls for i in c.items]
    assert sorted(seen) == list(range(len(sizes)))  # every image exactly once
    for c in calls:
        assert 1 <= len(c.items) <= batch_size
        assert all(fits(sizes[i], (c.height, c.width)) for i in c.items), c
        if len({sizes[i] for i in c.items}) == 1:
            assert (c.height, c.width) == sizes[c.items[0]]  # one exact size runs as it is


def test_every_image_once_within_tolerance_and_exact_sizes_untouched() -> None:
    rng = random.Random(0)
    sizes = [_fit(*rng.choice(SEVEN_SIZES)) for _ in range(200)]
    calls, left = plan_calls(sizes, [0] * len(sizes), 8)
    assert left == []
    _check_cover(calls, sizes, 8)


def test_tiny_photos_of_one_size_share_a_call() -> None:
    """The old planner passed leftovers from grid to grid and ran three 97x203 photos as three calls."""
    sizes = [(203, 97)] * 3 + [(512, 384)] * 8
    calls, _ = plan_calls(sizes, [0] * len(sizes), 8)
    assert sorted(len(c.items) for c in calls) == [3, 8]


def test_a_window_keeps_its_leftovers_for_the_next() -> None:
    sizes = [(384, 512)] * 11 + [(256, 256)] * 3
    calls, left = plan_calls(sizes, [0] * len(sizes), 8, final=False)
    assert [len(c.items) for c in calls] == [8]  # only full calls before the last window
    assert len(left) == 6
    later, rest = plan_calls([sizes[i] for i in left] + [(384, 512)] * 5, [0] * 11, 8, final=True)
    assert rest == [] and sorted(len(c.items) for c in later) == [3, 8]


def test_keys_never_mix_and_nothing_is_stretched_past_the_tolerance() -> None:
    sizes = [(512, 384), (512, 330), (341, 512), (384, 512)] * 4
    keys = ["a", "b"] * 8
    calls, _ = plan_calls(sizes, keys, 8)
    _check_cover(calls, sizes, 8)
    for c in calls:
        assert len({keys[i] for i in c.items}) == 1
    assert not fits((512, 330), (512, 384)) and fits((384, 512), (341, 512))  # 16% is too far, 11% is within
    assert TOLERANCE == 1 / 8


def test_the_seven_size_mix_fills_whatever_the_order() -> None:
    """96 photos in 20 random orders: never worse than grouping exact sizes only, and at least 0.8 full."""
    fills = []
    for seed in range(20):
        rng = random.Random(seed)
        sizes = [_fit(*rng.choice(SEVEN_SIZES)) for _ in range(96)]
        calls = []
        carried: list[tuple[int, int]] = []
        for start in range(0, 96, 64):  # two windows, as a shard of 96 at batch_size 8 sees them
            window = carried + sizes[start : start + 64]
            made, left = plan_calls(window, [0] * len(window), 8, final=start + 64 >= 96)
            calls += made
            carried = [window[i] for i in left]
        exact_only = sum(-(-sizes.count(s) // 8) for s in set(sizes))
        assert len(calls) <= exact_only
        fills.append(96 / len(calls) / 8)
    assert min(fills) >= 0.75 and sorted(fills)[len(fills) // 2] >= 0.8, fills


class _InvertEach(InvertStylizer):
    """``test-invert`` for a family that conditions each sample on its own style (as dumoulin does)."""

    name = "test-invert-each"
    per_sample_styles: ClassVar[bool] = True

    def transfer_each(self, content: Tensor, styles: list[list[Style]], *, alpha: float) -> Tensor:
        return alpha * (1 - content) + (1 - alpha) * content


_register(_InvertEach)


def test_a_shard_of_the_seven_size_mix_fills_and_keeps_exact_sizes(tmp_path: Path) -> None:
    """96 photos, max_side 512, batch 8: one style, then one sampled style per photo."""
    arrays = {f"p{i:02d}": photo(SEVEN_SIZES[(i * 5) % 7], seed=i) for i in range(96)}
    paths = write_inputs(tmp_path / "in", {k: encode(v) for k, v in arrays.items()})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    styles = tmp_path / "styles.txt"
    styles.write_text("1\n2\n3\n4\n5\n")
    for name, extra in [("one", {"stylizer": "test-invert"}), ("sampled", {"style_manifest": str(styles)})]:
        options = {"stylizer": "test-invert-each", "max_side": 512, "batch_size": 8, **extra}
        worker = ShardWorker(job_config(manifest, tmp_path / name, **options))
        try:
            summary = worker.run(0, 0, 96)
        finally:
            worker.close()
        assert summary["images_in_calls"] / summary["model_calls"] / 8 >= 0.8, (name, summary)
        rows = pq.read_table(worker.storage.open(layout.shard_key(0))).to_pylist()
        assert len(rows) == 96 and all(r["status"] == "ok" for r in rows)
        for r in rows:
            h, w = arrays[r["image_id"]].shape[:2]
            scale = min(1.0, 512 / max(w, h))
            expected = (round(w * scale), round(h * scale))
            assert abs(r["out_width"] - expected[0]) <= 1 and abs(r["out_height"] - expected[1]) <= 1
            out = decode_image(Path(r["output_uri"]).read_bytes()).array
            assert out.shape[1::-1] == (r["out_width"], r["out_height"])
