"""Helpers shared by test modules."""

from __future__ import annotations

import functools
import json
from typing import Any


@functools.cache
def app_functions() -> dict[str, Any]:
    """The function app's functions by name. get_functions() indexes the app and refuses to run
    twice in one process, so every test module goes through this one cached call."""
    import function_app
    from devtools.simtenant.funchost import app_functions as indexed

    return {f.get_function_name(): f for f in indexed(function_app.app)}


def trigger_of(name: str) -> dict[str, Any]:
    return json.loads(app_functions()[name].get_function_json())["bindings"][0]


def user_function(name: str) -> Any:
    return app_functions()[name].get_user_function()


def serve_webhook_from_env(monkeypatch: Any, settings: Any) -> None:
    """Point the function app's own settings (read from the environment, as in Azure) at these
    test settings, so the webhook and the test share one tenant and one table prefix."""
    from monitors import entry

    env = {
        "ETG_GRAPH_ENDPOINT": settings.graph_endpoint,
        "ETG_GRAPH_CREDENTIAL": "none",
        "ETG_STORAGE_CONNECTION": settings.storage_connection,
        "ETG_TABLE_PREFIX": settings.table_prefix,
        "ETG_NOTIFICATION_URL": settings.notification_url,
        "ETG_CLIENT_STATE": settings.client_state,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(entry, "_settings", None)
