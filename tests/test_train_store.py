"""The one safetensors header reader, as checkpoint listing, resuming and weight loading use it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from pipeline.checkpoints import find_checkpoints
from pipeline.errors import WeightsError
from pipeline.models.weights import read_header, read_metadata
from pipeline.train.store import read_safetensors

META = {"stylizer": "johnson", "step": "7", "style": "candy.jpg"}


def test_header_metadata_without_the_tensors(tmp_path: Path) -> None:
    data = save({"w": torch.ones(4, 4)}, metadata=META)
    assert read_header(io.BytesIO(data)) == META
    assert read_header(io.BytesIO(data[:20])) is None  # torn inside the header
    assert read_header(io.BytesIO(b"\x00" * 8)) is None and read_header(io.BytesIO(b"abc")) is None
    assert read_header(io.BytesIO(save({"w": torch.ones(1)}))) == {}  # no metadata at all
    assert read_safetensors(data, "test")[1] == META

    (tmp_path / "good.safetensors").write_bytes(data)
    (tmp_path / "torn.safetensors").write_bytes(data[:20])
    assert read_metadata(str(tmp_path / "good.safetensors")) == META
    with pytest.raises(WeightsError, match="not a safetensors file"):
        read_metadata(str(tmp_path / "torn.safetensors"))
    found = find_checkpoints(str(tmp_path))
    assert [(f.stylizer, f.step, f.style) for f in found] == [("johnson", 7, "candy.jpg")]
