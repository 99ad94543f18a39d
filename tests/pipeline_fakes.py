"""Fast stylizers for the batch-pipeline tests, registered on import.

Ray workers import this module through ``STYLIZE_PLUGINS=tests.pipeline_fakes`` (see
``pipeline.worker.import_plugins``); the repo root is on their ``PYTHONPATH``.

- ``test-invert``: index styles; output ``1 - x``.
- ``test-crashy``: like ``test-invert`` but kills its process when a batch holds a pure magenta
  image, the stand-in for an input that segfaults a native library.
- ``test-tint``: image styles (``tests.fakes.TintStylizer``), for quality metrics and style sampling.
"""

from __future__ import annotations

import os

from torch import Tensor

from pipeline.errors import ModelNotFound
from pipeline.models.base import Style, Stylizer
from pipeline.models.registry import ModelCard, get_card, register
from tests.fakes import TintStylizer

PLUGIN = "tests.pipeline_fakes"


class InvertStylizer(Stylizer):
    name = "test-invert"
    family = "test"
    style_kind = "index"

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        return alpha * (1 - content) + (1 - alpha) * content


class CrashyStylizer(InvertStylizer):
    name = "test-crashy"

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        for img in content:
            if img[0].min() > 0.99 and img[1].max() < 0.01 and img[2].min() > 0.99:
                os._exit(3)
        return super().transfer(content, styles, alpha=alpha, masks=masks)


def _register(cls: type[Stylizer]) -> None:
    try:
        get_card(cls.name)
        return
    except ModelNotFound:
        pass
    register(ModelCard(stylizer=cls, paper="test double", preprocessing="none", factory=lambda **_: cls()))


_register(InvertStylizer)
_register(CrashyStylizer)
_register(TintStylizer)


class SlowStylizer(InvertStylizer):
    """``test-invert`` that takes 0.4 s per batch, so a test can kill a job between shards."""

    name = "test-slow"

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        import time

        time.sleep(0.4)
        return super().transfer(content, styles, alpha=alpha, masks=masks)


_register(SlowStylizer)


class PickyStylizer(InvertStylizer):
    """``test-invert`` that raises (a Python error, not a crash) when a batch holds a pure magenta image."""

    name = "test-picky"

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        for img in content:
            if img[0].min() > 0.99 and img[1].max() < 0.01 and img[2].min() > 0.99:
                raise ValueError("picky: magenta")
        return super().transfer(content, styles, alpha=alpha, masks=masks)


class DiesOnceStylizer(InvertStylizer):
    """``test-invert`` whose process dies on its second model call, once per flag file
    (``$STYLIZE_TEST_FLAG_DIR``): a worker killed in the middle of a shard."""

    name = "test-dies-once"
    calls = 0

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        type(self).calls += 1
        flag = os.path.join(os.environ.get("STYLIZE_TEST_FLAG_DIR", "/nonexistent"), "died")
        if type(self).calls == 2 and os.path.isdir(os.path.dirname(flag)) and not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(9)
        return super().transfer(content, styles, alpha=alpha, masks=masks)


_register(PickyStylizer)
_register(DiesOnceStylizer)


class HangsStylizer(InvertStylizer):
    """``test-invert`` whose model call hangs (a hung driver or device) for two minutes, far past the tests'
    stall_timeout; bounded, so a test that calls it in-process by mistake fails slowly instead of never."""

    name = "test-hangs"

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        import time

        time.sleep(120)
        return super().transfer(content, styles, alpha=alpha, masks=masks)


_register(HangsStylizer)
