"""Shared fixtures. Tests never read ../shared and never download."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _hermetic_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted weights are cached per test session, not in the user's ~/.cache; nothing is fetched."""
    mp = pytest.MonkeyPatch()
    mp.setenv("STYLIZE_CACHE", str(tmp_path_factory.mktemp("stylize-cache")))
    mp.setenv("STYLIZE_OFFLINE", "1")  # published weights are never downloaded; tests serve their own
    yield
    mp.undo()


@pytest.fixture
def photo() -> torch.Tensor:
    """A real photo (scikit-image's astronaut), (1,3,128,128) in [0,1]."""
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (128, 128), anti_aliasing=True)
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
