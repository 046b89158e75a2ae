"""Signs of life on stderr while a command works (rich): the step it is on, how long it has taken, and a bar
where the work is counted.

The compiler core and the attribution methods know nothing of rich: the long-running ones take a plain
``progress(done, total)`` callback, and :func:`step` hands one out. Shown only while :func:`shown` is
active and stderr is a terminal (nothing is written into a log or a pipe); every function here is a
no-op otherwise, so commands call them unconditionally.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable, Iterator

__all__ = ["Callback", "enabled", "shown", "step", "per_item"]

Callback = Callable[[int, int], None]
"""``progress(done, total)``: how the core and attr functions report counted work."""

_display = None  # the active rich Progress, if any
_current = None  # the task of the current step


def enabled(args: argparse.Namespace, stream=None) -> bool:
    """Whether to show progress: stderr is a terminal and ``--no-progress`` was not given."""
    stream = sys.stderr if stream is None else stream
    return not getattr(args, "no_progress", False) and bool(getattr(stream, "isatty", lambda: False)())


@contextlib.contextmanager
def shown(on: bool = True) -> Iterator[None]:
    """Show progress on stderr inside this block (it disappears when the block ends)."""
    global _display, _current
    if not on or _display is not None:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Count(ProgressColumn):
        """``done/total`` for counted work, nothing for a step of unknown length."""

        def render(self, task) -> Text:
            return Text(f"{int(task.completed)}/{int(task.total)}" if task.total else "", style="progress.download")

    console = Console(file=sys.stderr, force_terminal=True)
    display = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24), Count(),
                       TimeElapsedColumn(), console=console, transient=True, redirect_stdout=False,
                       redirect_stderr=False)
    stdout = sys.stdout
    display.start()
    _display, _current = display, None
    if stdout.isatty():  # one terminal for both: the display steps aside while the results are printed
        sys.stdout = _Aside(stdout, display)
    try:
        yield
    finally:
        sys.stdout = stdout
        display.stop()
        _display, _current = None, None


class _Aside:
    """stdout that takes the progress display off the terminal before it writes (the next step brings it back):
    results are printed as they are, never wrapped or interleaved by the display."""

    def __init__(self, stream, display) -> None:
        self._stream, self._display = stream, display

    def write(self, text: str) -> int:
        if self._display.live.is_started:
            self._display.stop()
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _ignore(done: int, total: int) -> None:
    pass


def step(description: str, total: int | None = None) -> Callback:
    """Say what the command does now (replacing the previous step); returns the callback that counts its
    work (``done`` of ``total``), a no-op when progress is off."""
    global _current
    if _display is None:
        return _ignore
    if not _display.live.is_started:  # stepped aside for printed results
        _display.start()
    if _current is not None:
        _display.remove_task(_current)
    task = _current = _display.add_task(description, total=total)

    def advance(done: int, total: int) -> None:
        # drawn now at the start and the end, between them at the display's own pace
        _display.update(task, completed=done, total=total, refresh=done in (0, total))

    return advance


def per_item(prefix: str = "") -> Callable[[str, int, int], None]:
    """A callback ``progress(name, done, total)`` with one line per name (work running side by side)."""
    if _display is None:
        return lambda name, done, total: None
    tasks: dict[str, object] = {}

    def advance(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = _display.add_task(f"{prefix}{name}", total=total)
        _display.update(tasks[name], completed=done, total=total)

    return advance
