"""Errors a user can cause, each printed as one line: `FILE:LINE key.path: message`."""

from __future__ import annotations

import difflib
from typing import Iterable


class SpecError(Exception):
    """A spec, an override or a data file that cannot run. Printed as one line, exit status 2."""

    def __init__(self, path: str, message: str, *, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.message = message
        self.file = file
        self.line = line

    def located(self, file: str | None, line: int | None) -> "SpecError":
        """Fills in the file and line where they are not known yet."""
        if self.file is None:
            self.file = file
        if self.line is None:
            self.line = line
        return self

    def __str__(self) -> str:
        if self.file and self.line:
            head = " ".join(p for p in (f"{self.file}:{self.line}", self.path) if p)
        elif self.file:
            head = f"{self.file}: {self.path}" if self.path else self.file
        else:
            head = self.path
        return f"{head}: {self.message}" if head else self.message


class DataError(SpecError):
    """A data file or column that cannot be used as the spec says."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the nearest choice, or '' when nothing is near."""
    choices = list(choices)
    near = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if not near:
        lowered = {c.lower(): c for c in choices}
        near = [lowered[str(word).lower()]] if str(word).lower() in lowered else []
    return f" (did you mean '{near[0]}'?)" if near else ""


def unknown(kind: str, word: str, choices: Iterable[str]) -> str:
    """The message for an unknown name: what was expected, and the nearest valid one."""
    choices = sorted(choices)
    if not choices:
        return f"unknown {kind} '{word}'; none is accepted here"
    hint = did_you_mean(word, choices)
    if hint:
        return f"unknown {kind} '{word}'{hint}"
    listed = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"unknown {kind} '{word}'; expected one of: {listed}"


class RunFailed(Exception):
    """Training ran but failed (e.g. the loss became NaN); the run directory holds what was done."""


class RunInterrupted(Exception):
    """Ctrl-C stopped training after an epoch; a checkpoint and the report of what was done exist.
    `preempted`: the preemption signal of a submitit job, when that stopped it (the caller hands
    it on to submitit, which requeues the job)."""

    def __init__(self, message: str, preempted: int | None = None):
        super().__init__(message)
        self.preempted = preempted
