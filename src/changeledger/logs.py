"""Structured logging through structlog, imported only when something is logged.

structlog (and the console renderer it brings) costs more to import than a quick command
spends on its work, so the library asks for a logger here and the import happens on the
first log call. The CLI calls ``configure`` to send logs to stderr at its chosen level.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_level = logging.WARNING
_configured = False


def configure(*, debug: bool) -> None:
    """Set the level for the CLI; takes effect on the first log call."""
    global _level, _configured  # noqa: PLW0603 - one process-wide logging setting
    _level = logging.DEBUG if debug else logging.WARNING
    _configured = False


class LazyLogger:
    """A structlog logger bound to ``name``, created on first use."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _logger(self) -> Any:
        global _configured  # noqa: PLW0603
        import structlog

        # Configure only for the CLI, or when the application left structlog unconfigured
        # (its default prints every level to stdout, which would mix with command output).
        if not _configured and (_level != logging.WARNING or not structlog.is_configured()):
            structlog.configure(
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.KeyValueRenderer(
                        key_order=["timestamp", "level", "event"]
                    ),
                ],
                wrapper_class=structlog.make_filtering_bound_logger(_level),
                logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
                cache_logger_on_first_use=True,
            )
        _configured = True
        return structlog.get_logger(self._name)

    def debug(self, event: str, **fields: Any) -> None:
        self._logger().debug(event, **_redacted(fields))

    def info(self, event: str, **fields: Any) -> None:
        self._logger().info(event, **_redacted(fields))

    def warning(self, event: str, **fields: Any) -> None:
        self._logger().warning(event, **_redacted(fields))


def _redacted(fields: dict[str, Any]) -> dict[str, Any]:
    """Log fields with secrets masked (an error message may quote a token)."""
    from changeledger.domain.redact import default_redactor

    redactor = default_redactor()
    return {key: redactor.value(value) for key, value in fields.items()}


def get_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
