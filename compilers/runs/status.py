"""A line on a terminal while something slow goes on without a progress bar of its own: loading a
run's data, predicting a large file.

`Status(name, info, enabled)` shows nothing unless stderr is a terminal and the work has lasted
SHOW_AFTER_S (a quick load leaves no line); then `name`, a spinner, `info` (what `update` last
said) and the time, kept once done (`keep`) or removed. Off a terminal the command's log stays as it
was: runs print their epochs' lines, predict its summary.
"""

from __future__ import annotations

import sys
import threading


class Status:
    SHOW_AFTER_S = 0.5

    def __init__(self, name: str, info: str, enabled: bool = True, *, keep: bool = True):
        self.bar = self.timer = None
        self.shown = False
        if enabled and sys.stderr.isatty():
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), SpinnerColumn(finished_text=" "),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=not keep)
            self.task = self.bar.add_task(name, total=1, info=info)
            self.lock = threading.Lock()
            self.timer = threading.Timer(self.SHOW_AFTER_S, self._show)
            self.timer.daemon = True

    def _show(self) -> None:
        with self.lock:
            if not self.shown and self.timer is not None:
                self.shown = True
                self.bar.start()

    def __enter__(self) -> "Status":
        if self.timer is not None:
            self.timer.start()
        return self

    def update(self, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, info=info)

    def done(self, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=1, info=info)

    def __exit__(self, *exc) -> bool:
        if self.timer is not None:
            self.timer.cancel()
            with self.lock:
                self.timer = None      # a timer that fires now shows nothing
                if self.shown:
                    self.bar.stop()
        return False
