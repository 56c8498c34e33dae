"""Failure logging without patient data (see services/pacs/logs.py; adapters do not import services)."""

from __future__ import annotations

import logging
import sys

__all__ = ["log_failure"]


def log_failure(logger: logging.Logger, what: str) -> None:
    error = sys.exc_info()[1]
    logger.error("%s: %s", what, type(error).__name__ if error is not None else "unknown error")
    logger.debug("%s", what, exc_info=True)
