"""remediator.runner.SubprocessRunner: the one runner (xentools.command) seen by the remediator.
An operator script's children die at its timeout with it, so none can act after a rollback."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from pathlib import Path

from remediator.plan import Command
from remediator.runner import Result, SubprocessRunner


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return status != "Z"


def test_an_operator_scripts_grandchild_dies_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    marker = tmp_path / "acted"
    script = tmp_path / "throttle.sh"
    # The script's child would act 2 s later, long after the 0.3 s timeout: it must not.
    script.write_text(
        "#!/bin/sh\n"
        f"(sleep 2; touch {shlex.quote(str(marker))}) &\n"
        f"echo $! > {shlex.quote(str(pid_file))}\n"
        "wait\n"
    )
    script.chmod(0o755)
    results: list[Result] = []
    started = time.monotonic()
    try:
        result = SubprocessRunner(on_result=results.append).run(
            Command(argv=(str(script), "web01"), timeout=0.3)
        )
        elapsed = time.monotonic() - started
        assert result.timed_out and not result.ok and results == [result]
        assert elapsed < 1.5, f"the 0.3 s timeout held for {elapsed:.1f} s"
        grandchild = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(grandchild), "the script's child outlived the timeout"
        time.sleep(2.2 - (time.monotonic() - started))
        assert not marker.exists(), "the script's child acted after the timeout"
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_environment_is_minimal_plus_the_commands(tmp_path: Path) -> None:
    script = tmp_path / "env.sh"
    script.write_text("#!/bin/sh\nenv\n")
    script.chmod(0o755)
    os.environ["JUDICATOR_TEST_SECRET"] = "leak"
    try:
        result = SubprocessRunner().run(
            Command(argv=(str(script),), timeout=5, env={"DOMAIN": "web01"})
        )
    finally:
        del os.environ["JUDICATOR_TEST_SECRET"]
    assert result.ok
    assert "DOMAIN=web01" in result.stdout.splitlines()
    assert "LC_ALL=C" in result.stdout.splitlines()
    assert "JUDICATOR_TEST_SECRET" not in result.stdout


def test_a_missing_program_is_a_failed_result(tmp_path: Path) -> None:
    result = SubprocessRunner().run(Command(argv=(str(tmp_path / "nope"),), timeout=5))
    assert (result.ok, result.timed_out, result.returncode) == (False, False, -1)
    assert "cannot run" in result.describe()
