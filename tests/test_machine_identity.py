"""No committed fixture, and nothing generated for one, carries the identity of a machine.

A fixture that holds the kernel release or host name of the machine that wrote it passes only on
that machine (CI runs on the developer's machine; a fresh one differs). Two checks catch the
class without a second machine:

- every committed fixture is searched for this machine's identity (kernel release and version,
  host name, CPU model): whichever machine runs the tests, a value of its own that reached a
  fixture is found;
- every fixture generator runs again while the machine reports another identity: if its output
  changes, it read the machine, and the committed file can only match where it was generated.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sim import fakexl_sample
from tests.support import REPO

# Folders whose files are fixtures or expectations compared byte for byte by the tests.
FIXTURE_ROOTS = ("tests/fixtures", "prometheus/tests", "alertmanager/tests")

# Generators of committed fixtures: folder -> (file name -> text), run in this process.
GENERATORS: dict[str, Callable[[], dict[str, str]]] = {
    "tests/fixtures/xl": lambda: {f"{s}.txt": t for s, t in fakexl_sample.captures().items()},
}

# Values too common to mean a machine when seen as a whole word in a fixture ("vm": a host
# name of many sandboxes, and a word of KVM's own vocabulary, QMP's `"target": "vm"`).
GENERIC = {"localhost", "x86_64", "root", "debian", "linux", "ubuntu", "vm"}


def cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


def machine_identity() -> dict[str, str]:
    """This machine's identifying values, by what they are."""
    uname = os.uname()
    values = {
        "kernel release": uname.release,
        "kernel version": uname.version,
        "host name": uname.nodename,
        "fully qualified host name": socket.getfqdn(),
        "CPU model": cpu_model() or "",
    }
    return {what: value for what, value in values.items() if value and value not in GENERIC}


def fixture_files() -> Iterator[Path]:
    for root in FIXTURE_ROOTS:
        for path in sorted((REPO / root).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path


def occurrences(text: str, value: str) -> bool:
    """`value` appears in `text` as a whole word (a host name "vm" is not in "vmexit")."""
    return re.search(rf"(?<![\w.-]){re.escape(value)}(?![\w.-])", text) is not None


def identity_found(text: str, identity: dict[str, str]) -> list[str]:
    return [f"{what} {value!r}" for what, value in identity.items() if occurrences(text, value)]


def test_no_fixture_holds_this_machines_identity() -> None:
    identity = machine_identity()
    assert "kernel release" in identity  # the check below would otherwise look for nothing
    found = []
    for path in fixture_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{path.relative_to(REPO)}: {hit}" for hit in identity_found(text, identity)]
    assert not found, "fixtures carry this machine's identity:\n" + "\n".join(found)


def test_the_check_finds_a_planted_identity() -> None:
    identity = {"kernel release": "6.18.44-fc-v595", "host name": "vm"}
    planted = "host                   : sim-sample\nrelease                : 6.18.44-fc-v595\n"
    assert identity_found(planted, identity) == ["kernel release '6.18.44-fc-v595'"]
    assert identity_found('"externalURL":"http://vm:38891"', identity) == ["host name 'vm'"]
    assert identity_found("vmexits: 12\nsvm\n", identity) == []


OTHER_MACHINE = os.uname_result(
    (
        "Linux",
        "another-host-7",
        "9.9.9-other-kernel",
        "#42 SMP Thu Jan 1 00:00:00 UTC 2099",
        "x86_64",
    )
)


@pytest.fixture
def another_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process reports another kernel and host name, as a fresh machine would."""
    monkeypatch.setattr(os, "uname", lambda: OTHER_MACHINE)
    monkeypatch.setattr(platform, "uname", lambda: platform.uname_result(*OTHER_MACHINE))
    monkeypatch.setattr(platform, "release", lambda: OTHER_MACHINE.release)
    monkeypatch.setattr(platform, "node", lambda: OTHER_MACHINE.nodename)
    monkeypatch.setattr(socket, "gethostname", lambda: OTHER_MACHINE.nodename)
    monkeypatch.setattr(socket, "getfqdn", lambda *_: OTHER_MACHINE.nodename)


@pytest.mark.parametrize("folder", sorted(GENERATORS))
def test_generated_fixtures_do_not_depend_on_the_machine(
    folder: str, another_machine: None
) -> None:
    for name, text in GENERATORS[folder]().items():
        committed = (REPO / folder / name).read_text()
        assert committed == text, f"{folder}/{name} changes with the machine's identity"
