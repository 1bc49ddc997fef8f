"""Failures of what the monitor depends on, in words an operator can act on.

A storage account that does not answer, or a credential that is refused, is not a bug of the
monitor: every entry point reports it as one short message naming the setting to check, never a
traceback, and never a secret (messages are built from exception types and setting names only).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitors.settings import Settings

# httpx and azure-core are imported where a failure is judged, never at import time: the
# function app's cold start must not load HTTP clients it may not need.


class SettingsError(ValueError):
    """Raised when the environment does not describe a usable installation. Kept here, beside
    Unavailable, so entry points can catch both without loading the settings table."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid etg-monitor settings:\n  - " + "\n  - ".join(problems))


class Unavailable(Exception):
    """A dependency (the state store, the identity, Graph) could not be used."""


def is_dependency_failure(exc: BaseException) -> bool:
    import httpx
    from azure.core.exceptions import AzureError

    return isinstance(exc, AzureError | httpx.HTTPError | OSError | TimeoutError)


def _storage_setting(settings: Settings) -> str:
    return "ETG_STORAGE_CONNECTION" if settings.storage_connection else "ETG_STORAGE_TABLE_URL"


def unavailable(settings: Settings, exc: BaseException) -> Unavailable | None:
    """The operator's message for a dependency failure; None for anything else (a bug, which
    keeps its traceback)."""
    import httpx
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

    kind = type(exc).__name__
    if isinstance(exc, ClientAuthenticationError):
        return Unavailable(
            f"authentication was refused ({kind}): check the app's managed identity or "
            f"credential, ETG_GRAPH_CREDENTIAL, and the identity's role on the storage account "
            f"named by {_storage_setting(settings)}"
        )
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        return Unavailable(
            f"the state store refused the request (HTTP {exc.status_code}, {kind}): check "
            f"{_storage_setting(settings)} and the identity's access to that account"
        )
    if isinstance(exc, AzureError | OSError | TimeoutError):
        return Unavailable(
            f"the state store could not be reached ({kind}): check {_storage_setting(settings)} "
            "and that the storage account answers from here"
        )
    if isinstance(exc, httpx.HTTPError):
        return Unavailable(
            f"Microsoft Graph could not be reached ({kind}): check ETG_GRAPH_ENDPOINT and the "
            "network path to it"
        )
    return None


@contextmanager
def dependency_failures_as_unavailable(settings: Settings) -> Iterator[None]:
    """Inside this block a dependency failure leaves as ``Unavailable``; a bug as itself."""
    try:
        yield
    except Exception as exc:
        if (problem := unavailable(settings, exc)) is not None:
            raise problem from exc
        raise
