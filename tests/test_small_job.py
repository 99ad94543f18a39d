"""The small job's start: the driver's checks overlap Ray's start, which stays on the main thread."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline import raysession, runner
from pipeline.config import JobConfig
from pipeline.errors import WeightsError


def _config(tmp_path) -> JobConfig:
    return JobConfig(manifest=str(tmp_path / "m.parquet"), output=str(tmp_path / "out"), stylizer="dumoulin")


def test_checks_run_beside_rays_start_and_ray_starts_on_the_main_thread(tmp_path, monkeypatch) -> None:
    seen: dict[str, object] = {}

    def start(address=None):  # Ray's processes die with the thread that started them: it must be main
        seen["ray_thread"] = threading.current_thread()
        seen["ray_started"] = time.perf_counter()
        time.sleep(0.3)
        seen["ray_done"] = time.perf_counter()
        return True

    def check(config):
        seen["check_thread"] = threading.current_thread()
        time.sleep(0.3)
        seen["check_done"] = time.perf_counter()

    monkeypatch.setattr(raysession, "ensure_ray", start)
    monkeypatch.setattr(runner, "check_can_start", check)
    t0 = time.perf_counter()
    assert runner._checked_with_ray(_config(tmp_path), None) is True
    assert seen["ray_thread"] is threading.main_thread() and seen["check_thread"] is not threading.main_thread()
    assert time.perf_counter() - t0 < 0.55  # side by side, not one after the other (0.6 s)


def test_a_failed_check_is_the_error_shown_once_ray_has_started(tmp_path, monkeypatch) -> None:
    started = []
    monkeypatch.setattr(raysession, "ensure_ray", lambda address=None: started.append(1) or True)

    def check(config):
        raise WeightsError("stylizer 'dumoulin' has no weights here")

    monkeypatch.setattr(runner, "check_can_start", check)
    with pytest.raises(WeightsError, match="no weights"):
        runner._checked_with_ray(_config(tmp_path), None)
    assert started == [1]  # the CLI's exit then takes the embedded Ray down with it


def test_a_failed_check_wins_over_a_failed_start(tmp_path, monkeypatch) -> None:
    def start(address=None):
        raise ConnectionError("no cluster at ray://nowhere")

    def check(config):
        raise WeightsError("stylizer 'dumoulin' has no weights here")

    monkeypatch.setattr(raysession, "ensure_ray", start)
    monkeypatch.setattr(runner, "check_can_start", check)
    with pytest.raises(WeightsError):
        runner._checked_with_ray(_config(tmp_path), None)
