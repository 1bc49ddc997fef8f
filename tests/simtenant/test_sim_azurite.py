from __future__ import annotations

import socket

import httpx
import pytest

from devtools.simtenant.azurite import ACCOUNT_KEY, Azurite, AzuriteNotInstalled, find_azurite_table

pytestmark = pytest.mark.skipif(
    find_azurite_table() is None,
    reason="node_modules/.bin/azurite-table is not installed (run `make setup` first)",
)


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_azurite_starts_restarts_on_the_same_port_and_stops() -> None:
    with Azurite() as azurite:
        assert accepts_connections(azurite.port)
        assert (
            f"TableEndpoint=http://127.0.0.1:{azurite.port}/devstoreaccount1;"
            in azurite.connection_string
        )
        assert f"AccountKey={ACCOUNT_KEY};" in azurite.connection_string
        # An unsigned request is refused by the emulator, which proves it is Azurite answering.
        assert httpx.get(f"{azurite.table_endpoint}/Tables", timeout=5).status_code == 403
        port = azurite.port
        azurite.restart()
        assert azurite.port == port and accepts_connections(port)
    assert not azurite.running
    assert not accepts_connections(port)


def test_missing_executable_names_the_setup_step(tmp_path: object) -> None:
    with pytest.raises(AzuriteNotInstalled, match="make setup"):
        Azurite(executable="/nonexistent/azurite-table").start()
