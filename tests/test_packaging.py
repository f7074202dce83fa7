"""The built wheel, installed into a fresh venv away from the source tree: `tld --version`, the
`tld.preprocessing` import, only `tld` at the top level, and a red heart from the bundled model inside the wheel.

The venv borrows the test venv's already installed dependencies through a .pth path (no network, no
long install); the package itself comes only from the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "runs", "data", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".whl", ".gl"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "tld"
    shutil.copytree(ROOT, src, ignore=SKIP)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
        ".",
    ]
    subprocess.run(cmd, cwd=src, check=True, capture_output=True)
    (found,) = out.glob("tld_diffusion-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The test venv's dependencies, as a plain path: its .pth files (the editable tld) are not run.
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True)
    return env


def _run(venv: Path, *args: str, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_wheel_holds_only_the_tld_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"tld"}
    for needed in ("tld/preprocessing/encode.py", "tld/weights/__init__.py", "tld/configs/emoji_tiny.yaml"):
        assert needed in names


def test_installed_wheel_runs_away_from_the_source_tree(venv, tmp_path):
    version = _run(venv, venv / "bin" / "tld", "--version", cwd=tmp_path)
    assert version.startswith("tld-diffusion 0.")
    code = (
        "import importlib.util, tld, tld.preprocessing.shards, tld.weights; "
        "print(tld.__file__); print(importlib.util.find_spec('preprocessing'))"
    )
    where, top = _run(venv, venv / "bin" / "python", "-c", code, cwd=tmp_path).split()
    assert str(venv) in where and str(ROOT) not in where
    assert top == "None"  # no top-level `preprocessing` import name


def test_installed_wheel_generates_with_the_bundled_model(venv, tmp_path):
    args = [
        "generate",
        "red heart",
        "-o",
        str(tmp_path / "out.png"),
        "--steps",
        "8",
        "--seed",
        "0",
        "--no-progress",
    ]
    _run(venv, venv / "bin" / "tld", *args, cwd=tmp_path)
    from PIL import Image

    from tld.encoders.colour import dominant_colour

    image = Image.open(tmp_path / "out.png").convert("RGB")
    assert image.size == (64, 64) and dominant_colour(np.asarray(image)) == "red"
