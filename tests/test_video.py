"""Video without Ray: PyAV I/O, DIS flow and occlusion, E_warp, the flow blend, segments, bad inputs.

Every video is made here (``tests.video_helpers``): a seeded texture moving 2 px per frame to the right
and a square moving (-1, +1) px per frame, 64x48, at 30000/1001 fps with a 440 Hz AAC track.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import tests.video_fakes  # noqa: F401 - registers test-flicker
from pipeline.errors import DecodeError
from pipeline.media import flow
from pipeline.media.video import EncodeOptions, VideoReader, join, probe_video
from pipeline.models import create
from pipeline.models.base import Style
from pipeline.temporal import Temporal, pair_errors, run
from pipeline.video_render import VideoSettings, frame_stylizer, render
from tests import video_helpers as vh

N = 40
FIDELITY_BOUND = 0.06  # mean |O - S| with blend 0.5 on test-flicker (offsets U(-0.12, 0.12), noise 0.03)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vh.write_video(tmp_path_factory.mktemp("video") / "moving.mp4", vh.frames(N))


@pytest.fixture(scope="module")
def flicker():
    return frame_stylizer(create("test-flicker"), [Style(index=0)])


def decoded(path: Path) -> list[np.ndarray]:
    with VideoReader(str(path)) as reader:
        return [f.array for f in reader.frames()]


def mean_ewarp(seq: list[np.ndarray], offset: float = 0.0, sign: float = 1.0) -> float:
    errs = []
    for t in range(len(seq) - 1):
        fw, bw = vh.true_flows(t)
        fw, bw = sign * fw + offset, sign * bw - offset
        errs.append(flow.warp_error(seq[t] / 255.0, seq[t + 1] / 255.0, fw, flow.visible(fw, bw)))
    return float(np.mean(errs))


def test_ewarp_of_the_input_with_the_true_motion_is_near_zero(source: Path) -> None:
    raw = vh.frames(N)
    assert mean_ewarp(raw) < 1e-9  # integer motion, bilinear warp: exact where visible
    assert mean_ewarp(raw, offset=0.5) > 1e-3  # a half-pixel convention error shows
    assert mean_ewarp(raw, sign=-1) > 0.03  # so does a sign error
    floor = mean_ewarp(decoded(source))  # H.264's own error
    assert floor < 0.003 and mean_ewarp(decoded(source), sign=-1) > 20 * floor


def test_occlusion_mask_finds_what_the_square_uncovers_and_what_leaves_the_frame() -> None:
    fw, bw = vh.true_flows(5)
    mask = flow.visible(fw, bw)
    sx, sy = vh.square_at(5)
    assert not mask[:, -vh.SHIFT :].any()  # moves out of the picture
    assert not mask[sy + 1 : sy + vh.SQUARE - 1, sx - vh.SHIFT].any()  # texture covered by the square next frame
    assert mask[sy + 2 : sy + vh.SQUARE - 2, sx + 2 : sx + vh.SQUARE - 2].all()  # the square itself moves on
    assert mask.mean() > 0.8
    est = flow.FlowEstimator()
    a, b = vh.frames(7)[5:7]
    f = est(flow.grey(a), flow.grey(b))
    assert abs(float(np.median(f[..., 0])) - vh.SHIFT) < 0.1 and abs(float(np.median(f[..., 1]))) < 0.1


def test_flow_halves_the_ewarp_of_an_unstable_stylizer_and_keeps_rate_duration_and_audio(
    source: Path, flicker, tmp_path: Path
) -> None:
    results = {}
    for mode in ("none", "flow"):
        out = tmp_path / f"{mode}.mp4"
        results[mode] = render(str(source), str(out), flicker, VideoSettings(consistency=mode))
        got, want = probe_video(str(out)), probe_video(str(source))
        assert (
            (got.frames, got.rate, got.duration)
            == (want.frames, want.rate, want.duration)
            == (N, vh.RATE, got.duration)
        )
        assert got.rate == Fraction(30000, 1001) and abs(got.duration - N * 1001 / 30000) < 1e-9
        assert len(decoded(out)) == N
        assert vh.audio_packets(out) == vh.audio_packets(source) and len(vh.audio_packets(source)) > 40
    none, steady = results["none"].stats, results["flow"].stats
    assert none.ewarp_pairs == steady.ewarp_pairs == N - 1
    assert steady.ewarp <= 0.5 * none.ewarp, (steady.ewarp, none.ewarp)
    assert steady.fidelity < FIDELITY_BOUND and none.fidelity < 0.003  # none: only rounding
    # E_warp measured again on the decoded files agrees (the codec adds little)
    again = np.nanmean(pair_errors(decoded(tmp_path / "flow.mp4"), decoded(source)))
    assert again < 0.5 * np.nanmean(pair_errors(decoded(tmp_path / "none.mp4"), decoded(source)))


def test_segments_with_warm_up_match_one_pass(source: Path, flicker, tmp_path: Path) -> None:
    frames = list(enumerate(decoded(source)))
    one = Temporal("flow", measure=False)
    whole = dict(run(frames, flicker, one))
    cuts = [0, 14, 27, N]
    pieces: dict[int, np.ndarray] = {}
    for a, b in zip(cuts, cuts[1:], strict=False):
        state = Temporal("flow", measure=False)
        pieces.update(run(frames[max(0, a - 10) : b], flicker, state, write_from=a))
        state.close()
    one.close()
    assert sorted(pieces) == list(range(N))
    diffs = [np.abs(pieces[i].astype(int) - whole[i]).max() for i in range(N)]
    assert max(diffs) <= 2, diffs  # 0.5^10 of the state left after the warm-up
    # without a warm-up the first frame after a cut is visibly another frame
    cold = dict(run(frames[14:27], flicker, Temporal("flow", measure=False)))
    assert np.abs(cold[14].astype(int) - whole[14]).mean() > 3

    # as files: segments encoded on their own, joined by copying packets, audio copied once; lossless
    # x264 (crf 0), so what is compared is the pixels, not two encoders' different rate decisions
    lossless = VideoSettings(encode=EncodeOptions(crf=0))
    parts = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        parts.append(str(tmp_path / f"seg{a}.mp4"))
        render(str(source), parts[-1], flicker, lossless, start=a, stop=None if b == N else b)
    joined = tmp_path / "joined.mp4"
    join(parts, str(joined), audio_from=str(source))
    render(str(source), str(tmp_path / "whole.mp4"), flicker, lossless)
    a_frames, b_frames = decoded(joined), decoded(tmp_path / "whole.mp4")
    assert len(a_frames) == N
    assert max(np.abs(x.astype(int) - y).mean() for x, y in zip(a_frames, b_frames, strict=True)) < 0.5
    info = probe_video(str(joined))
    assert (info.frames, info.rate) == (N, vh.RATE) and abs(info.duration - probe_video(str(source)).duration) < 1e-9
    assert vh.audio_packets(joined) == vh.audio_packets(source)
    errors = pair_errors(a_frames, decoded(source))
    at_joins = [errors[c - 1] for c in cuts[1:-1]]  # pair (c-1, c) is errors[c-1]
    others = np.nanmedian([e for i, e in enumerate(errors) if i + 1 not in cuts])
    assert max(at_joins) <= 1.5 * others, (at_joins, others)


def test_a_scene_cut_resets_the_state(flicker) -> None:
    frames = vh.frames(12, seed=1)[:6] + vh.frames(12, seed=2)[6:]
    state = Temporal("flow")
    out = dict(run(list(enumerate(frames)), flicker, state))
    assert state.stats.cuts == 1 and state.stats.ewarp_pairs == len(frames) - 2  # the cut pair is not scored
    np.testing.assert_array_equal(out[6], np.round(np.clip(flicker([frames[6]])[0], 0, 1) * 255))
    assert not np.array_equal(out[7], np.round(np.clip(flicker([frames[7]])[0], 0, 1) * 255))


def test_rotation_is_honoured(tmp_path: Path, flicker) -> None:
    stored = vh.frames(8)
    path = vh.write_video(tmp_path / "rot.mp4", stored, rotation=90)
    info = probe_video(str(path))
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    got = decoded(path)
    assert got[3].shape == (64, 48, 3)
    assert np.abs(got[3].astype(int) - np.rot90(stored[3], 1)).mean() < 12  # as displayed, up to the codec
    assert np.abs(got[3].astype(int) - np.rot90(stored[3], -1)).mean() > 30
    out = render(str(path), str(tmp_path / "out.mp4"), flicker, VideoSettings())
    assert (out.width, out.height) == (48, 64)
    written = probe_video(str(tmp_path / "out.mp4"))
    assert (written.width, written.height, written.rotation) == (48, 64, 0)


def test_variable_frame_rate_is_resampled_by_timestamps(tmp_path: Path) -> None:
    pts = [0, 1, 2, 4, 5, 7, 8, 9, 12, 13]  # gaps: frames 2, 5 and 9 stay on screen longer
    source = vh.frames(len(pts))
    path = vh.write_video(tmp_path / "vfr.mp4", source, pts=pts)
    with VideoReader(str(path)) as reader:
        slots = list(reader.frames())
        assert any("variable frame rate" in n for n in reader.notes)
    assert [f.index for f in slots] == list(range(14))
    shown = [max(i for i, p in enumerate(pts) if p <= k) for k in range(14)]  # the frame on screen at k / rate
    plain = decoded_raw(path)
    for f, i in zip(slots, shown, strict=True):
        np.testing.assert_array_equal(f.array, plain[i])


def decoded_raw(path: Path) -> list[np.ndarray]:
    return vh.decode_all(path)


def test_frames_stream_from_a_seek(source: Path) -> None:
    whole = decoded(source)
    with VideoReader(str(source)) as reader:
        part = list(reader.frames(23, 31))
    assert [f.index for f in part] == list(range(23, 31))
    assert all(np.array_equal(f.array, whole[f.index]) for f in part)


def bad_videos(root: Path, source: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the reason says)."""
    data = source.read_bytes()
    root.mkdir(parents=True, exist_ok=True)
    (root / "truncated.mp4").write_bytes(data[: len(data) * 2 // 3])
    (root / "corrupt.mp4").write_bytes(data[:32] + np.random.default_rng(0).bytes(4000))
    (root / "empty.mp4").write_bytes(b"")
    at = data.find(b"avc1", data.find(b"stsd"))
    (root / "unknown-codec.mp4").write_bytes(data[:at] + b"zzzz" + data[at + 4 :])
    with av.open(str(root / "audio-only.mp4"), "w") as c:
        a = c.add_stream("aac", rate=48_000)
        a.layout = "mono"
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 48_000, 0
        for p in [*a.encode(chunk), *a.encode()]:
            c.mux(p)
    with av.open(str(root / "zero-frames.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    big = vh.write_video(root / "too-big.mp4", [np.zeros((64, 96, 3), np.uint8)] * 3, audio=False)
    return {
        "truncated": (root / "truncated.mp4", "truncated or corrupt"),
        "corrupt": (root / "corrupt.mp4", "corrupt"),
        "empty": (root / "empty.mp4", "empty file"),
        "unknown-codec": (root / "unknown-codec.mp4", "unsupported video codec"),
        "audio-only": (root / "audio-only.mp4", "no video stream"),
        "zero-frames": (root / "zero-frames.mp4", "zero frames"),
        "too-big": (big, "too large"),
    }


BAD_MAX_PIXELS = 64 * 64  # "too-big" is 96x64


def test_bad_inputs_raise_decode_errors_with_reasons(tmp_path: Path, source: Path, flicker) -> None:
    for name, (path, reason) in bad_videos(tmp_path / "bad", source).items():
        with pytest.raises(DecodeError, match=reason):
            render(str(path), str(tmp_path / f"{name}.out.mp4"), flicker, VideoSettings(max_pixels=BAD_MAX_PIXELS))


@pytest.mark.parametrize(
    "case, reason",
    [
        ("truncated", "truncated or corrupt"),
        ("audio-only", "no video stream"),
        ("unknown-codec", "unsupported video codec"),
        ("zero-frames", "zero frames"),
        ("missing", "file not found"),
        ("bad-suffix", "--output must end in"),
        ("bad-consistency", "consistency must be one of"),
    ],
)
def test_stylize_video_bad_input_is_one_error_line(
    case: str, reason: str, source: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from pipeline.cli import run as cli

    monkeypatch.setenv("STYLIZE_PLUGINS", "tests.video_fakes")
    monkeypatch.delenv("STYLIZE_DEBUG", raising=False)
    bad = bad_videos(tmp_path / "bad", source)
    path = {"missing": tmp_path / "nope.mp4"}.get(case, bad.get(case, (source,))[0])
    out = tmp_path / ("o.avi" if case == "bad-suffix" else "o.mp4")
    extra = ["--consistency", "sometimes"] if case == "bad-consistency" else []
    code = cli(["video", str(path), "-o", str(out), "--stylizer", "test-flicker", *extra])
    err = capfd.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error: ") and reason in err[0], err


def test_stylize_video_writes_the_video_and_a_summary_line(
    source: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from pipeline.cli import run as cli

    monkeypatch.setenv("STYLIZE_PLUGINS", "tests.video_fakes")
    out = tmp_path / "o.mp4"
    assert cli(["video", str(source), "-o", str(out), "--stylizer", "test-flicker", "--max-side", "32"]) == 0
    line = capfd.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"wrote {out} (32x24, 40 frames at 30000/1001 fps") and "E_warp 0." in line
    assert probe_video(str(out)).frames == N and vh.audio_packets(out) == vh.audio_packets(source)
