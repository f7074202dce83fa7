"""Every `tld ...` command in README.md and docs/*.md runs as written, or is excluded with a reason.

The commands come from the fenced code blocks (`$ ` prompts and backslash continuations joined).
A command that matches no exclusion below runs in a temp folder holding the checkout's `examples/`,
with the bundled model, so a new docs command is run by default. A `tld X: error: ...` line right
after a command is its expected output: the command must fail with that line.
"""

from __future__ import annotations

import re
import runpy
import shlex
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# (regex on the command, why it is not run here). Generation and editing commands are never excluded
# unless they use a model that an excluded training command writes.
EXCLUDED = [
    (r"^tld (train|train-vae|recipe)\b", "training: minutes to hours (tests/test_train_*.py, test_recipe.py)"),
    (r"^tld export\b", "needs a training run (tests/test_train_export.py, test_finetune_bundled.py)"),
    (r"^tld preprocess (download|folder|iconify|fashion-mnist)\b", "needs the user's files, npm or the network"),
    (r"^tld preprocess (emoji|encode|combine|colour-words|caption-variants|subset)\b",
     "data preparation of a training run, minutes (tests/test_preprocess_*.py)"),
    (r"^tld (ui|serve)\b", "a server that runs until stopped (tests/test_apps_*.py)"),
    (r"^tld eval\b", "needs a dataset or hundreds of images (tests/test_eval_*.py)"),
    (r"^tld convert\b", "needs the original 400 MB checkpoint (tests/test_convert.py)"),
    (r"--model (models|runs|my-model|MODEL)/?", "a model the training commands above write"),
    (r"--lora runs/", "an adapter the training commands above write (tests/test_lora_train.py)"),
    (r"^python examples/lora_zorp/measure\.py", "draws ~730 images, minutes; its numbers are in docs/adapters.md"),
]  # fmt: skip


def doc_commands(text: str) -> list[tuple[str, str | None]]:
    """(command, expected error line or None) for every `tld`/`python examples/` line in code blocks."""
    found: list[tuple[str, str | None]] = []
    in_block, buf = False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_block, buf = not in_block, ""
            continue
        if not in_block:
            continue
        s = buf + line.strip()
        buf = ""
        if s.endswith("\\"):
            buf = s[:-1] + " "
            continue
        s = s.removeprefix("$ ").removeprefix(".venv/bin/")
        if re.match(r"^tld [\w-]+: error: ", s) and found:
            found[-1] = (found[-1][0], s)
        elif s.startswith(("tld ", "python examples/")):
            found.append((re.sub(r"\s+#.*$", "", s).strip(), None))
    return found


def all_commands() -> list[tuple[str, str, str | None]]:
    return [(doc.name, cmd, err) for doc in DOCS for cmd, err in doc_commands(doc.read_text())]


def exclusion(command: str) -> str | None:
    return next((why for pattern, why in EXCLUDED if re.search(pattern, command)), None)


RUN = [c for c in all_commands() if exclusion(c[1]) is None]


def test_the_docs_have_runnable_commands():
    docs = {doc for doc, _, _ in RUN}
    assert {"README.md", "generation.md", "model.md"} <= docs, docs
    edits = [cmd for _, cmd, _ in RUN if cmd.split()[1] in ("img2img", "inpaint", "outpaint")]
    assert len(edits) >= 3, edits


def test_quick_start_is_the_same_in_readme_and_training_docs():
    def quick(text: str) -> list[str]:  # the first code block after the "Quick start" heading
        start = text.index("```bash", text.index("## Quick start"))
        return [cmd for cmd, _ in doc_commands(text[start : text.index("```\n", start + 7) + 4])]

    readme, training = quick((ROOT / "README.md").read_text()), quick((ROOT / "docs/training.md").read_text())
    assert readme and readme == training
    assert any("--filter" in cmd for cmd in readme)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "examples", work / "examples")
    (work / "weights").symlink_to(ROOT / "weights")
    return work


@pytest.mark.parametrize("doc,command,error", RUN, ids=[f"{d}:{c[:60]}" for d, c, _ in RUN])
def test_doc_command_runs(doc, command, error, workdir, monkeypatch, capsys):
    from tld.cli import main

    monkeypatch.chdir(workdir)
    argv = shlex.split(command)
    if argv[0] == "python":
        monkeypatch.setattr(sys, "argv", argv[1:])
        runpy.run_path(argv[1], run_name="__main__")
        return
    rc = main(argv[1:])
    err = capsys.readouterr().err
    if error is None:
        assert rc == 0, f"{doc}: `{command}` failed: {err[-500:]}"
    else:
        assert rc == 1 and error in err, f"{doc}: `{command}` printed {err[-300:]!r}, not {error!r}"
