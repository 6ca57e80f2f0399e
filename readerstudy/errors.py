"""The one error of reader studies, raised by services and selectors alike (so neither imports the other
for it) and answered by the web layer with its own status and code."""
from __future__ import annotations


class StudyError(ValueError):
    """A request the study cannot accept; ``status_code`` is what the web layer answers."""

    def __init__(self, message: str, status_code: int = 400, code: str = "invalid") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
