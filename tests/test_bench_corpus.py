"""The benchmark corpus: seeded, every kind of file an archive holds, and each file what its spec says."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pipeline.bench.corpus import MIX, describe, make_corpus, specs
from pipeline.codec import decode_image


def test_the_corpus_holds_every_size_and_decodes_to_its_spec(tmp_path: Path) -> None:
    n = 30
    chosen = specs(n, seed=3)
    assert {(s.width, s.height) for s in chosen} == {(w, h) for w, h, _ in MIX}
    assert specs(n, seed=3) == chosen and specs(n, seed=4) != chosen  # seeded
    paths = make_corpus(tmp_path, n, seed=3)
    assert len(paths) == n
    for spec, path in zip(chosen, paths, strict=True):
        decoded = decode_image(path.read_bytes())
        assert (decoded.width, decoded.height) == (spec.width, spec.height)  # EXIF-rotated files are turned back
        with Image.open(path) as stored:
            assert (stored.mode == "L") == spec.grey
            assert (stored.getexif().get(0x0112) == 6) == spec.rotated
    info = describe(n, seed=3)
    assert sum(info["sizes"].values()) == n and info["grey"] == sum(s.grey for s in chosen)


def test_a_larger_corpus_has_greyscale_and_rotated_files() -> None:
    info = describe(200, seed=0)
    assert 5 <= info["grey"] <= 40 and 5 <= info["rotated"] <= 40
