"""Failure descriptions for logs that carry no patient data.

An exception's text can hold message content (a mapping bug quoting a field, a database error quoting
the SQL parameters, i.e. the raw message). Logs get the exception class and where it was raised; the
full text goes only into the message's stage in the database, which staff read with the same rights as
the message itself.
"""

from __future__ import annotations

import traceback

__all__ = ["describe"]


def describe(exc: BaseException) -> str:
    """``KeyError at engine/mapping/interpreter.py:212 in run`` — class and innermost frame only."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if not frames:
        return exc.__class__.__name__
    last = frames[-1]
    path = last.filename
    for marker in ("/engine/", "/adapters/", "/services/", "/site-packages/"):
        if marker in path:
            path = path[path.rindex(marker) + 1 :]
            break
    return f"{exc.__class__.__name__} at {path}:{last.lineno} in {last.name}"
