"""The deployment and the code agree on settings and Graph permissions.

Names come from the code (monitors/settings.py, monitors/graph/permissions.py), never from a list
kept here, so a setting added to the code fails these tests until infra/ and docs/ carry it too.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_PY = ROOT / "monitors" / "settings.py"
PERMISSIONS_PY = ROOT / "monitors" / "graph" / "permissions.py"
INFRA = ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"
CONFIGURATION_MD = ROOT / "docs" / "configuration.md"
RUNBOOK_MD = ROOT / "docs" / "runbook.md"
PERMISSIONS_MD = ROOT / "docs" / "permissions.md"

# An app setting in Bicep: an upper-case key at the start of a line inside an object literal.
_BICEP_KEY = re.compile(r"^\s+([A-Z][A-Z0-9_]*)\s*:\s*(.*?)\s*$", re.MULTILINE)
_SECRET_NAME = re.compile(r"WEBHOOK|CLIENT_STATE|NOTIFICATION_URL|SECRET|TOKEN|PASSWORD")


def _is_env(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "env"


def _str(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


@cache
def code_settings() -> dict[str, str | None]:
    """Every setting monitors/settings.py reads -> its default when the code states one.

    Reads: ``env.get("NAME")``, ``env["NAME"]``, any helper called as ``f(env, "NAME", default,
    ...)`` such as ``_int``, and every key of ``SCHEDULE_SETTINGS``.
    """
    tree = ast.parse(SETTINGS_PY.read_text(encoding="utf-8"))
    found: dict[str, str | None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and _is_env(func.value):
                name = _str(node.args[0]) if node.args else None
                if name:
                    found.setdefault(name, None)
            for i, arg in enumerate(node.args[:-1]):
                name = _str(node.args[i + 1])
                if _is_env(arg) and name:
                    default = node.args[i + 2] if len(node.args) > i + 2 else None
                    value = default.value if isinstance(default, ast.Constant) else None
                    found[name] = None if value is None else str(value)
        elif isinstance(node, ast.Subscript) and _is_env(node.value):
            name = _str(node.slice)
            if name:
                found.setdefault(name, None)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            is_schedules = any(
                isinstance(t, ast.Name) and t.id == "SCHEDULE_SETTINGS" for t in targets
            )
            if is_schedules and isinstance(node.value, ast.Dict):
                for key, value in zip(node.value.keys, node.value.values, strict=True):
                    name = _str(key) if key is not None else None
                    if name:
                        found[name] = _str(value)
    return found


@cache
def bicep_app_settings() -> dict[str, str]:
    """Upper-case app setting names set anywhere under infra/ -> the Bicep value expression."""
    settings: dict[str, str] = {}
    for path in sorted(INFRA.rglob("*.bicep")):
        for match in _BICEP_KEY.finditer(path.read_text(encoding="utf-8")):
            settings[match.group(1)] = match.group(2)
    return settings


def _owned_by_monitor(name: str) -> bool:
    """Names only this application gives meaning to (as opposed to Azure's own settings)."""
    return name.startswith("ETG_") or name.endswith("_SCHEDULE")


def _literal(expression: str) -> str | None:
    match = re.fullmatch(r"'([^']*)'", expression)
    return match.group(1) if match else None


@cache
def graph_permissions_in_code() -> set[str]:
    tree = ast.parse(PERMISSIONS_PY.read_text(encoding="utf-8"))
    return {
        value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and (value := _str(node.value)) and "." in value
    }


def test_settings_parser_finds_what_the_code_reads():
    names = code_settings()
    assert "ETG_GRAPH_ENDPOINT" in names, "the settings.py parser found nothing it should"
    assert names.get("SCAN_SCHEDULE"), "SCHEDULE_SETTINGS keys and defaults are read"
    assert bicep_app_settings(), "no app settings found under infra/"


def test_every_setting_the_code_reads_is_set_by_the_bicep_app_settings():
    missing = sorted(set(code_settings()) - set(bicep_app_settings()))
    assert not missing, f"set these in infra/main.bicep (var appSettings): {missing}"


def test_bicep_sets_no_monitor_setting_the_code_does_not_read():
    stale = sorted(
        name
        for name in bicep_app_settings()
        if _owned_by_monitor(name) and name not in code_settings()
    )
    assert not stale, f"infra/ sets settings monitors/settings.py does not read: {stale}"


def test_bicep_literal_values_equal_the_code_defaults():
    bicep = bicep_app_settings()
    drift = {
        name: (bicep_value, default)
        for name, default in code_settings().items()
        if default is not None
        and name in bicep
        and (bicep_value := _literal(bicep[name])) is not None
        and bicep_value != default
    }
    assert not drift, f"Bicep value differs from the code default (bicep, code): {drift}"


def test_secret_settings_are_key_vault_references_never_values():
    bicep = bicep_app_settings()
    secrets = {name: bicep[name] for name in bicep if _SECRET_NAME.search(name)}
    assert secrets, "expected the Teams webhook and notification secrets in the app settings"
    plain = sorted(
        name for name, value in secrets.items() if "@Microsoft.KeyVault(SecretUri=" not in value
    )
    assert not plain, f"secrets must be Key Vault references: {plain}"


def test_storage_is_identity_based_with_no_connection_string():
    bicep = bicep_app_settings()
    assert "ETG_STORAGE_TABLE_URL" in bicep
    if "ETG_STORAGE_CONNECTION" in bicep:
        assert _literal(bicep["ETG_STORAGE_CONNECTION"]) == ""
    assert "AzureWebJobsStorage__credential: 'managedidentity'" in (
        INFRA / "app" / "api.bicep"
    ).read_text(encoding="utf-8")
    assert "allowSharedKeyAccess: false" in MAIN_BICEP.read_text(encoding="utf-8")


def test_every_setting_is_documented_in_configuration_md():
    documented = CONFIGURATION_MD.read_text(encoding="utf-8")
    names = set(code_settings()) | {n for n in bicep_app_settings() if _owned_by_monitor(n)}
    missing = sorted(name for name in names if f"`{name}`" not in documented)
    assert not missing, f"document these in docs/configuration.md: {missing}"


def test_every_graph_permission_the_code_names_is_granted_and_documented():
    wanted = graph_permissions_in_code()
    assert wanted, "no permission constants found in monitors/graph/permissions.py"
    for path in (
        INFRA / "app" / "graph-permissions.bicep",
        INFRA / "grant-graph-permissions.ps1",
        INFRA / "grant-graph-permissions.sh",
        PERMISSIONS_MD,
    ):
        text = path.read_text(encoding="utf-8")
        missing = sorted(p for p in wanted if p not in text)
        assert not missing, f"{path.relative_to(ROOT)} does not grant or explain {missing}"


def test_every_anomaly_kind_has_a_runbook_section():
    from monitors.rules.kinds import KINDS

    runbook = RUNBOOK_MD.read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ (\S+)\s*$", runbook, re.MULTILINE))
    missing = sorted(set(KINDS) - headings)
    assert not missing, f"add a section to docs/runbook.md for: {missing}"
