"""The README's test command (`bash .ci/test`) brings the browser on a fresh Debian machine, and
`.ci/run` calls the same command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "test"


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _run(tmp_path: Path, uid: str) -> tuple[subprocess.CompletedProcess, Path]:
    """.ci/test on a PATH with no chromium: `id` and `apt-get` are stubs that log their calls."""
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    _stub(bin_dir, "id", f"echo {uid}")
    _stub(bin_dir, "apt-get", f'echo "$@" >> {log}')
    (bin_dir / "dirname").symlink_to(
        "/usr/bin/dirname" if Path("/usr/bin/dirname").exists() else "/bin/dirname"
    )
    env = {**os.environ, "PATH": str(bin_dir), "PYTHON": sys.executable}
    args = ["/bin/bash", str(SCRIPT), "--collect-only", "-q", "tests/test_common.py"]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300), log


def test_root_on_a_fresh_machine_installs_the_browser_then_runs_pytest(tmp_path):
    done, log = _run(tmp_path, "0")
    assert done.returncode == 0, done.stderr[-2000:]
    calls = log.read_text().splitlines()
    assert calls[0] == "update -qq" and calls[1] == "install -y -qq chromium chromium-driver"
    assert "test_common.py" in done.stdout  # pytest ran, with the arguments passed on


def test_without_root_it_says_what_to_install(tmp_path):
    done, log = _run(tmp_path, "1000")
    assert done.returncode == 0 and not log.exists()
    assert "apt-get install chromium chromium-driver" in done.stderr


def test_readme_and_ci_use_the_same_command():
    readme = (ROOT / "README.md").read_text()
    assert "```bash\nbash .ci/test\n```" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nbash .ci/test" in ci and "pytest" not in ci.replace("then pytest", "")
