"""The Dockerfile, read as text (no Docker engine here): what it copies exists and reaches the
build context, and the packages it copies are all the product needs at run time."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.deploy.deploy_support import (
    REPO,
    cli_problems,
    compose,
    console_scripts,
    dockerfile_instructions,
    dockerignore_patterns,
    dockerignored,
)
from tests.support import imported_project_packages

PRODUCT_SCRIPTS = ("judicator-exporter", "judicator-remediator")
# Debian release -> its python3, for the venv the image builds with Debian's interpreter.
DEBIAN_PYTHON = {"bookworm": (3, 11), "trixie": (3, 13)}


def _copy_sources() -> list[str]:
    sources = []
    for instruction in dockerfile_instructions():
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        words = [w for w in instruction.arguments.split() if not w.startswith("--")]
        if re.search(r"--from=", instruction.arguments):
            continue
        sources.extend(words[:-1])
    return sources


def _build_args() -> dict[str, str]:
    return {
        name: default
        for instruction in dockerfile_instructions()
        if instruction.keyword == "ARG"
        for name, _, default in [instruction.arguments.partition("=")]
    }


def test_dockerfile_is_multi_stage_and_copies_only_from_its_stages() -> None:
    instructions = dockerfile_instructions()
    stages = [i for i in instructions if i.keyword == "FROM"]
    assert len(stages) == 2, "a build stage and a slim runtime stage"
    names = {i.arguments.split()[-1] for i in stages if " AS " in i.arguments.upper()}
    for instruction in instructions:
        for stage in re.findall(r"--from=(\S+)", instruction.arguments):
            assert stage in names, f"line {instruction.line}: no stage {stage!r}"
    assert not any(i.keyword == "ADD" for i in instructions), "COPY, not ADD"


def test_copied_files_exist_and_are_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    sources = _copy_sources()
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignored(source.rstrip("/"), patterns), f".dockerignore drops {source}"


def test_dockerignore_keeps_the_heavy_and_the_private_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".git", ".venv", ".cache/xen", "build/stub", "xensim/stub/libxenctrl.c"):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    assert not dockerignored("exporter/cli.py", patterns)


def test_image_carries_every_package_the_services_import() -> None:
    copied = {source.rstrip("/") for source in _copy_sources()}
    needed = imported_project_packages("exporter", "remediator")
    assert "xensim" not in needed, "the product must not import the simulator"
    missing = needed - copied
    assert not missing, f"the image lacks packages the services import: {sorted(missing)}"
    for script in PRODUCT_SCRIPTS:
        assert console_scripts()[script].split(".")[0] in copied


def test_image_keeps_no_console_script_whose_package_it_lacks() -> None:
    copied = {source.rstrip("/") for source in _copy_sources()}
    removed = {
        word.removeprefix("/opt/judicator/bin/")
        for instruction in dockerfile_instructions()
        if instruction.keyword == "RUN"
        for command in instruction.arguments.split("&&")
        if command.split()[:1] == ["rm"]
        for word in command.split()[1:]
    }
    for script, entry_point in console_scripts().items():
        if entry_point.split(".")[0] not in copied:
            assert script in removed, f"the image would install {script} without its package"
    assert not removed & set(PRODUCT_SCRIPTS)


def test_image_python_satisfies_requires_python() -> None:
    release = _build_args()["DEBIAN_RELEASE"]
    with (REPO / "pyproject.toml").open("rb") as stream:
        requires = tomllib.load(stream)["project"]["requires-python"]
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires)
    assert match, f"requires-python {requires!r}: this test reads only '>=X.Y'"
    assert DEBIAN_PYTHON[release] >= (int(match[1]), int(match[2]))


def test_image_toolstack_is_the_xen_release_the_project_targets() -> None:
    # design.md: libxenctrl.so.4.17 (Debian 12); the build args say how to change it.
    assert _build_args()["XEN_VERSION"] == "4.17"
    installs = " ".join(i.arguments for i in dockerfile_instructions() if i.keyword == "RUN")
    assert "xen-utils-${XEN_VERSION}" in installs
    assert "iproute2" in installs, "the remediator needs tc and ip"


@pytest.mark.parametrize("script", PRODUCT_SCRIPTS)
def test_compose_flags_are_flags_the_cli_accepts(script: str) -> None:
    command = compose()["services"][script.removeprefix("judicator-")]["command"]
    assert cli_problems(script, [str(arg) for arg in command[1:]]) == []
