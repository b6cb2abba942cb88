"""docs/deploy.md stays true: the files, policies, host paths and command lines it names exist."""

from __future__ import annotations

import re

import pytest

from tests.deploy.deploy_support import (
    DEPLOY_DOC,
    REPO,
    XEN_HOST_PATHS,
    cli_problems,
    load_yaml,
)

REPO_PATH = re.compile(
    r"`((?:prometheus|alertmanager|grafana|deploy|docs|remediator|exporter|xentools)/[^`\s]*"
    r"|compose\.yaml|Dockerfile)`"
)
ALERT_NAME = re.compile(r"`(Xen[A-Z][A-Za-z]+)`")
SCRIPTS = ("judicator-exporter", "judicator-remediator")


def _doc() -> str:
    return DEPLOY_DOC.read_text(encoding="utf-8")


def _code_lines() -> list[str]:
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", _doc(), flags=re.M | re.S)
    return [line for block in blocks for line in block.splitlines()]


def test_every_repository_path_named_exists() -> None:
    named = set(REPO_PATH.findall(_doc()))
    assert named
    for path in sorted(named):
        relative = path.split("#")[0].rstrip("/")
        matches = list(REPO.glob(relative)) if "*" in relative else [REPO / relative]
        assert matches and all(m.exists() for m in matches), f"docs/deploy.md names {path}"


def test_every_alert_named_is_a_shipped_rule() -> None:
    alerts = {
        rule["alert"]
        for path in (REPO / "prometheus" / "rules").glob("*.yml")
        for group in load_yaml(path).get("groups") or []
        for rule in group.get("rules") or []
        if "alert" in rule
    }
    named = set(ALERT_NAME.findall(_doc()))
    assert named
    assert named <= alerts, f"not shipped rules: {sorted(named - alerts)}"


def test_every_xen_host_path_compose_mounts_is_explained() -> None:
    for path in XEN_HOST_PATHS:
        assert f"`{path}" in _doc(), f"docs/deploy.md does not say why {path} is mounted"


def _command_lines(script: str) -> list[list[str]]:
    found = []
    for line in _code_lines():
        words = line.split("#")[0].split()
        for index, word in enumerate(words):
            # The program itself: first on its line, or after `docker compose exec <service>`.
            runs_it = index == 0 or words[index - 1] in {"exporter", "remediator"}
            if runs_it and word.rsplit("/", 1)[-1] == script:
                found.append([w for w in words[index + 1 :] if not w.startswith("<")])
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_command_lines_use_flags_the_cli_accepts(script: str) -> None:
    for argv in _command_lines(script):
        assert cli_problems(script, argv) == [], f"docs/deploy.md: {script} {' '.join(argv)}"


def test_the_remediator_commands_are_shown() -> None:
    subcommands = {argv[1] for argv in _command_lines("judicator-remediator") if len(argv) > 1}
    assert {"check-config", "list", "release"} <= subcommands


def test_every_recorded_series_named_is_recorded() -> None:
    records = {
        rule["record"]
        for path in (REPO / "prometheus" / "rules").glob("*.yml")
        for group in load_yaml(path).get("groups") or []
        for rule in group.get("rules") or []
        if "record" in rule
    }
    named = set(re.findall(r"\b([a-z_]+:[a-z_]+:[a-z0-9_]+)\b", _doc()))
    assert named
    assert named <= records, f"not recorded by prometheus/rules/: {sorted(named - records)}"
