"""The deployment, the docs and the code agree on settings and Graph permissions.

Settings come from the table in monitors/settings.py (imported, never parsed as text), so a
setting added there fails these tests until infra/ sets it and the generated docs carry it.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from devtools import settings_docs
from monitors.settings import SETTINGS, SETTINGS_BY_NAME

ROOT = Path(__file__).resolve().parents[2]
PERMISSIONS_PY = ROOT / "monitors" / "graph" / "permissions.py"
INFRA = ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"
CONFIGURATION_MD = ROOT / "docs" / "configuration.md"
README_MD = ROOT / "README.md"
RUNBOOK_MD = ROOT / "docs" / "runbook.md"
PERMISSIONS_MD = ROOT / "docs" / "permissions.md"

# An app setting in Bicep: an upper-case key at the start of a line inside an object literal.
_BICEP_KEY = re.compile(r"^\s+([A-Z][A-Z0-9_]*)\s*:\s*(.*?)\s*$", re.MULTILINE)


def _str(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


@cache
def bicep_app_settings() -> dict[str, str]:
    """Upper-case app setting names set anywhere under infra/ -> the Bicep value expression."""
    settings: dict[str, str] = {}
    for path in sorted(INFRA.rglob("*.bicep")):
        for match in _BICEP_KEY.finditer(path.read_text(encoding="utf-8")):
            settings[match.group(1)] = match.group(2)
    return settings


def _literal(expression: str) -> str | None:
    match = re.fullmatch(r"'([^']*)'", expression)
    return match.group(1) if match else None


def _documented_literal(name: str) -> str | None:
    """The value the docs say infra writes, when they name one: the default unless the "in
    Azure" column says otherwise with a single `literal`."""
    documented = settings_docs.IN_AZURE.get(name)
    if documented is None:
        return SETTINGS_BY_NAME[name].default
    match = re.fullmatch(r"`([^`]*)`", documented)
    return match.group(1) if match else None


def test_the_bicep_parser_finds_app_settings():
    bicep = bicep_app_settings()
    assert "ETG_GRAPH_ENDPOINT" in bicep and "SCAN_SCHEDULE" in bicep, "the Bicep parser is blind"


def test_committed_configuration_md_is_the_generators_output():
    assert CONFIGURATION_MD.read_text(encoding="utf-8") == settings_docs.configuration_md(), (
        "docs/configuration.md is stale: run python -m devtools.settings_docs"
    )


def test_committed_readme_settings_table_is_the_generators_output():
    readme = README_MD.read_text(encoding="utf-8")
    assert readme == settings_docs.with_readme_table(readme), (
        "the README's settings table is stale: run python -m devtools.settings_docs"
    )


def test_running_the_generator_again_changes_nothing():
    assert settings_docs.main(["--check"]) == 0
    once = settings_docs.configuration_md()
    readme = settings_docs.with_readme_table(README_MD.read_text(encoding="utf-8"))
    assert settings_docs.configuration_md() == once
    assert settings_docs.with_readme_table(readme) == readme


def test_every_setting_is_documented_in_configuration_md_and_the_readme():
    configuration = CONFIGURATION_MD.read_text(encoding="utf-8")
    readme = README_MD.read_text(encoding="utf-8")
    missing = sorted(
        s.name
        for s in SETTINGS
        if f"`{s.name}`" not in configuration or f"`{s.name}`" not in readme
    )
    assert not missing, f"not in the generated docs: {missing}"


def test_every_setting_of_the_table_is_set_by_the_bicep_app_settings():
    missing = sorted(s.name for s in SETTINGS if s.name not in bicep_app_settings())
    assert not missing, f"set these in infra/main.bicep (var appSettings): {missing}"


def test_bicep_sets_only_settings_of_the_table_or_documented_platform_settings():
    unknown = sorted(
        name
        for name in bicep_app_settings()
        if name not in SETTINGS_BY_NAME and name not in settings_docs.READ_BY_OTHERS
    )
    assert not unknown, f"infra/ sets settings neither the table nor the docs know: {unknown}"


def test_bicep_literal_values_are_the_documented_values():
    bicep = bicep_app_settings()
    drift = {
        s.name: (bicep_value, documented)
        for s in SETTINGS
        if s.name in bicep
        and (documented := _documented_literal(s.name)) is not None
        and (bicep_value := _literal(bicep[s.name])) != documented
    }
    assert not drift, f"Bicep value differs from the documented one (bicep, docs): {drift}"


def test_secret_settings_are_key_vault_references_never_values():
    bicep = bicep_app_settings()
    secrets = {s.name: bicep[s.name] for s in SETTINGS if s.secret and s.name in bicep}
    assert secrets, "expected the Teams webhook and notification secrets in the app settings"
    plain = sorted(
        name
        for name, value in secrets.items()
        if _literal(value) != "" and "@Microsoft.KeyVault(SecretUri=" not in value
    )
    assert not plain, f"secrets must be Key Vault references (or empty): {plain}"


def test_storage_is_identity_based_with_no_connection_string():
    bicep = bicep_app_settings()
    assert "ETG_STORAGE_TABLE_URL" in bicep
    if "ETG_STORAGE_CONNECTION" in bicep:
        assert _literal(bicep["ETG_STORAGE_CONNECTION"]) == ""
    assert "AzureWebJobsStorage__credential: 'managedidentity'" in (
        INFRA / "app" / "api.bicep"
    ).read_text(encoding="utf-8")
    assert "allowSharedKeyAccess: false" in MAIN_BICEP.read_text(encoding="utf-8")


def test_no_test_reads_settings_py_as_source_text():
    # A string literal naming the module's file, alone or at the end of a path.
    path_literal = re.compile(r"""[/"']settings\.py["']""")
    readers = sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("*.py")
        if path_literal.search(path.read_text(encoding="utf-8"))
    )
    assert not readers, f"read the settings table through monitors.settings instead: {readers}"


@cache
def graph_permissions_in_code() -> set[str]:
    tree = ast.parse(PERMISSIONS_PY.read_text(encoding="utf-8"))
    return {
        value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and (value := _str(node.value)) and "." in value
    }


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
