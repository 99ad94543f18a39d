"""What a training run shows while it runs: one progress bar on a terminal, plain lines elsewhere.

On a terminal: a rich bar with the step, the losses, steps/s and the ETA, redrawn in place.
Anywhere else (a log file, a Ray job's log, a pipe): one plain line every ``log_every`` steps and
at the last step, with no escape codes, since a redrawn bar cannot be read there. Notes (resuming,
checkpoints written) are single lines either way.
"""

from __future__ import annotations

import time
from datetime import timedelta

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def losses_text(values: dict[str, float], digits: int = 4) -> str:
    """``total=1234 content=3.4 ...``: the total first, as the number to watch."""
    order = ["total", *[k for k in values if k != "total"]]
    return " ".join(f"{k}={values[k]:.{digits}g}" for k in order if k in values)


class StepLog:
    """Plain lines: ``[johnson] step 50/1000 total=... (2.1 steps/s, ETA 0:07:32)``."""

    def __init__(self, stylizer: str, total: int, *, every: int = 50, console: Console | None = None) -> None:
        self.stylizer, self.total, self.every = stylizer, total, max(1, every)
        self.console = console or Console(stderr=True)
        self.first: tuple[int, float] | None = None  # (step, time) of the first step seen

    def note(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def step(self, step: int, values: dict[str, float], at: float | None = None) -> None:
        """Step ``step`` finished at ``at`` (``time.time()``; default now) with these losses."""
        now = time.time() if at is None else at
        if self.first is None or step <= self.first[0]:  # the first step, or a restarted worker
            self.first = (step, now)
        if step % self.every and step != self.total:
            return
        done, elapsed = step - self.first[0], now - self.first[1]
        rate = done / elapsed if done > 0 and elapsed > 0 else 0.0
        eta = f", ETA {timedelta(seconds=round((self.total - step) / rate))}" if rate else ""
        speed = f"{rate:.2f} steps/s" if rate else "first step"
        self.note(f"[{self.stylizer}] step {step}/{self.total} {losses_text(values)} ({speed}{eta})")

    def close(self) -> None:
        pass


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.2f} steps/s" if task.speed else "- steps/s")


class StepBar(StepLog):
    """The rich bar; notes are printed above it."""

    def __init__(self, stylizer: str, total: int, *, every: int = 50, console: Console | None = None) -> None:
        super().__init__(stylizer, total, every=every, console=console)
        self.progress = Progress(
            TextColumn(f"[bold]{stylizer}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"),
            _Rate(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(stylizer, total=total, losses="")
        self.last: int | None = None
        self.progress.start()

    def note(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def step(self, step: int, values: dict[str, float], at: float | None = None) -> None:
        if self.last is None or step != self.last + 1:
            # a resumed run starts mid-way: start the bar there, so steps/s and the ETA count this run only
            self.progress.reset(self.task, completed=step - 1, total=self.total)
        self.last = step
        self.progress.update(self.task, completed=step, losses=losses_text(values, 3))

    def close(self) -> None:
        self.progress.stop()


def progress_for(stylizer: str, total: int, *, every: int = 50, console: Console | None = None) -> StepLog:
    """A bar when the console is an interactive terminal, else plain lines."""
    console = console or Console(stderr=True)
    cls = StepBar if console.is_terminal and not console.is_dumb_terminal else StepLog
    return cls(stylizer, total, every=every, console=console)
