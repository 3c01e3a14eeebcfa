"""Transient-error retry and error wrapping for every storage entry point.

Locked or busy SQLite databases, PostgreSQL serialization failures and deadlocks, and
dropped connections are retried with bounded, jittered backoff; the whole unit of work is
run again, so each one must be a single transaction. Any other database error becomes a
``StorageError`` with the driver's exception chained.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from changeledger.domain.errors import ChangeLedgerError, StorageError
from changeledger.logs import get_logger

P = ParamSpec("P")
R = TypeVar("R")

log = get_logger("changeledger.storage")

#: Attempts and total seconds before a transient error is given up on.
MAX_ATTEMPTS = 8
MAX_SECONDS = 30.0

_SQLITE_TRANSIENT = ("database is locked", "database is busy", "database table is locked")
# serialization_failure, deadlock_detected, lock_not_available
_PG_TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03"})


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is a database error that a fresh transaction may not hit again."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str) and state in _PG_TRANSIENT_STATES:
        return True
    message = str(orig).lower()
    return any(text in message for text in _SQLITE_TRANSIENT)


def _retry_logger(operation: str) -> Callable[[RetryCallState], None]:
    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "storage.retry",
            operation=operation,
            attempt=state.attempt_number + 1,  # the first attempt ran before tenacity
            error=str(exc).splitlines()[0] if exc else None,
        )

    return log_retry


def _log_first_retry(operation: str, exc: BaseException) -> None:
    log.warning("storage.retry", operation=operation, attempt=1, error=str(exc).splitlines()[0])


def database_retry(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry ``operation`` on transient errors; wrap lasting ones in ``StorageError``."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            # The first attempt runs without tenacity's bookkeeping: it is the common case
            # and costs as much as a whole small write.
            try:
                return fn(*args, **kwargs)
            except ChangeLedgerError:
                raise
            except SQLAlchemyError as exc:
                if not is_transient(exc):
                    raise wrap_storage_error(operation, exc) from exc
                _log_first_retry(operation, exc)
            retrying = Retrying(
                retry=retry_if_exception(is_transient),
                stop=stop_after_attempt(MAX_ATTEMPTS - 1) | stop_after_delay(MAX_SECONDS),
                wait=wait_random_exponential(multiplier=0.02, max=1.0),
                before_sleep=_retry_logger(operation),
                reraise=True,
            )
            try:
                return retrying(fn, *args, **kwargs)
            except ChangeLedgerError:
                raise
            except SQLAlchemyError as exc:
                raise wrap_storage_error(operation, exc) from exc

        return wrapper

    return decorate


def wrap_storage_error(operation: str, exc: SQLAlchemyError) -> StorageError:
    """A one-line ``StorageError`` for ``exc``; the caller chains the cause."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    hint = ""
    if is_transient(exc):
        hint = " (still busy after retrying; another process holds the ledger, try again)"
    return StorageError(f"storage error while trying to {operation}: {detail}{hint}")
