"""Job progress on the cluster's dashboards, through Ray's metrics API (``ray.util.metrics``).

The driver records what it already knows (the progress bar's state and each committed shard's summary):
images done and failed, images/s, and seconds per stage. Ray exports them from the node's metrics agent
in Prometheus format with the ``ray_`` prefix (``ray_stylize_images_done_total`` ...), so the
Prometheus/Grafana a KubeRay cluster runs shows a nightly job without reading its logs. Every series
carries the tag ``output`` (the output root) so two jobs on one cluster stay apart.
"""

from __future__ import annotations

from typing import Any

STAGES = ("decode", "stylize", "encode", "metrics")


class JobMetrics:
    """The job's metric objects; ``update`` from the driver's state, ``shard`` per committed shard.

    ``api`` is ``ray.util.metrics`` (or a stand-in with the same ``Counter``/``Gauge``/``Histogram``).
    """

    def __init__(self, output: str, api: Any = None) -> None:
        if api is None:
            from ray.util import metrics as api
        tags = ("output",)
        self.tags = {"output": output}
        self.done = api.Counter("stylize_images_done", description="Images finished (ok or failed).", tag_keys=tags)
        self.failed = api.Counter("stylize_images_failed", description="Images that failed.", tag_keys=tags)
        self.rate = api.Gauge("stylize_images_per_second", description="This run's throughput.", tag_keys=tags)
        self.remaining = api.Gauge("stylize_images_remaining", description="Rows not yet finished.", tag_keys=tags)
        self.stage = api.Histogram(
            "stylize_stage_seconds",
            description="Seconds per image in each stage (mean over a committed shard).",
            boundaries=[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
            tag_keys=("output", "stage"),
        )
        self._done = self._failed = None  # counts already exported (counters take increments)

    def update(self, state: dict[str, Any]) -> None:
        """From the driver's progress state (``done``, ``failed``, ``total``, ``rate``)."""
        done, failed = int(state["done"]), int(state["failed"])
        if self._done is None:  # rows finished by earlier runs are not this run's work
            self._done, self._failed = done, failed
        if done > self._done:
            self.done.inc(done - self._done, tags=self.tags)
            self._done = done
        if failed > self._failed:
            self.failed.inc(failed - self._failed, tags=self.tags)
            self._failed = failed
        self.rate.set(float(state.get("rate") or 0.0), tags=self.tags)
        self.remaining.set(max(0, int(state["total"]) - done), tags=self.tags)

    def shard(self, summary: dict[str, Any]) -> None:
        """Per-stage seconds from a committed shard's summary (its sums and counts)."""
        for stage in STAGES:
            n = int(summary.get(f"n_seconds_{stage}") or 0)
            if n:
                mean = float(summary[f"sum_seconds_{stage}"]) / n
                self.stage.observe(mean, tags={**self.tags, "stage": stage})
