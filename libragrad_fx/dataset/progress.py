"""What a person watching a run sees: one rich progress bar on rank 0, on stderr.

Rank 0 counts the samples of every shard finished since the run started, whichever rank wrote it
(it looks at the output folder about once a second), plus its own shard in progress: the bar
covers the whole run without the ranks talking to each other.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

__all__ = ["Bar", "folder_count"]


class Bar:
    """samples done / total, samples/s, ETA; a no-op when ``enabled`` is false."""

    def __init__(self, total: int, description: str, enabled: bool, count: Callable[[], int]) -> None:
        self.total, self.description, self.enabled, self.count = total, description, enabled, count
        self._bar = None
        self._last = 0.0

    def __enter__(self) -> "Bar":
        if self.enabled and self.total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task) -> Text:
                    return Text(f"{task.speed:.1f} samples/s" if task.speed else "- samples/s")

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=Console(file=sys.stderr), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def update(self, local: int = 0, force: bool = False) -> None:
        """Refresh from the folder (at most once a second unless ``force``) plus ``local`` samples in flight."""
        if self._bar is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 1.0:
            return
        self._last = now
        self._bar.update(self._task, completed=min(self.total, self.count() + local))

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self.update(force=True)
            self._bar.__exit__(*exc)


def folder_count(out: Path, layout, before: set[int]) -> Callable[[], int]:
    """Samples in the shards finished since ``before`` (any rank)."""
    from .shards import finished

    def count() -> int:
        return sum(len(layout.range(k)) for k in finished(out) - before)

    return count
