"""The Colab notebooks in colab/ stay in step with the real API and CLI.

Checks, without running a notebook: valid nbformat-4 JSON; every code cell compiles once the
IPython `!`/`%` lines are blanked; every `!tld ...` command parses with the real argparse parser
(notebook variables filled in); every `from tld... import X` name exists; keyword arguments of
pipeline / training calls exist; the training config dict builds a TrainConfig.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest

COLAB = Path(__file__).resolve().parent.parent / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))
# Values for notebook variables that are computed at run time rather than assigned a literal.
SAMPLE_VALUES = {"CKPT": "/root/.cache/state_dict_378000.pth", "MIXED_PRECISION": "bf16"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def code_cells(nb: dict) -> list[str]:
    return [source(c) for c in nb["cells"] if c["cell_type"] == "code"]


def logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    out, buf = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


def python_source(text: str) -> str:
    """IPython `!cmd` / `%magic` lines become `pass` at the same indentation."""
    lines = []
    for line in logical_lines(text):
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        lines.append(indent + "pass" if stripped.startswith(("!", "%")) else line)
    return "\n".join(lines) + "\n"


def shell_commands(text: str) -> list[str]:
    return [line.strip()[1:].strip() for line in logical_lines(text) if line.strip().startswith("!")]


def notebook_variables(nb: dict) -> dict:
    """Module-level `NAME = <literal>` assignments of all code cells, plus SAMPLE_VALUES."""
    values = dict(SAMPLE_VALUES)
    for text in code_cells(nb):
        for node in ast.parse(python_source(text)).body:
            if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                continue
            target, value = node.targets[0], node.value
            pairs = [(target, value)]
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):  # TILES, SHIFT = 6, 128
                pairs = list(zip(target.elts, value.elts))
            for name, literal in pairs:
                if isinstance(name, ast.Name):
                    try:
                        values[name.id] = ast.literal_eval(literal)
                    except ValueError:
                        pass
    return values


def substitute(command: str, values: dict) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in values, f"notebook variable {name!r} used in `!{command}` has no value"
        return str(values[name])

    return re.sub(r"\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", repl, command)


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def notebook(request):
    return request.param, load(request.param)


def test_both_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"train_your_own.ipynb", "generate.ipynb"}


def test_nbformat4_structure(notebook):
    path, nb = notebook
    assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int), path
    assert isinstance(nb["metadata"], dict) and isinstance(nb["cells"], list) and nb["cells"]
    kinds = set()
    for cell in nb["cells"]:
        kinds.add(cell["cell_type"])
        assert cell["cell_type"] in ("code", "markdown"), cell
        assert isinstance(cell["metadata"], dict)
        assert isinstance(cell["source"], list | str)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and "execution_count" in cell
    assert kinds == {"code", "markdown"}


def test_code_cells_compile(notebook):
    path, nb = notebook
    for k, text in enumerate(code_cells(nb)):
        compile(python_source(text), f"{path.name}[code cell {k}]", "exec")


def install_requirement(nb: dict):
    """The requirement the first code cell installs (`PACKAGE = f"..."`, with REPO_URL filled in)."""
    from packaging.requirements import Requirement

    values = notebook_variables(nb)
    first = code_cells(nb)[0]
    match = re.search(r'^PACKAGE = f"(.+)"$', first, re.M)
    assert match, "the install cell names no PACKAGE"
    return Requirement(match.group(1).replace("{REPO_URL}", values["REPO_URL"]))


NEEDED_EXTRAS = {"train_your_own.ipynb": {"data", "train"}, "generate.ipynb": set()}


def test_install_cell_installs_this_distribution(notebook):
    """pip must find the name it was asked for (not PyPI's unrelated `tld`), with the extras the
    notebook's commands need, stop the notebook when it fails, and put `tld` on the shell's PATH."""
    import tomllib

    path, nb = notebook
    project = tomllib.loads((COLAB.parent / "pyproject.toml").read_text())["project"]
    first = code_cells(nb)[0]
    assert re.search(r'^REPO_URL = "https://github\.com/.+"', first, re.M)
    assert "CHANGE THIS" in first
    req = install_requirement(nb)
    assert req.name == project["name"] and req.url.startswith("git+https://github.com/")
    assert NEEDED_EXTRAS[path.name] <= req.extras <= set(project["optional-dependencies"])
    assert ".returncode != 0" in first and "raise SystemExit" in first
    assert 'os.environ["PATH"] = os.path.dirname(sys.executable)' in first


def test_training_notebook_keeps_its_work_on_drive():
    nb = load(COLAB / "train_your_own.ipynb")
    cells = code_cells(nb)
    drive = next(c for c in cells if "drive.mount(" in c)
    assert "USE_DRIVE = False" in drive and "os.chdir(WORK_DIR)" in drive
    # every path of the run is relative, so it lands in WORK_DIR
    values = notebook_variables(nb)
    assert not any(
        str(values[k]).startswith("/") for k in ("SHARDS_DIR", "DATASET_DIR", "RUN_DIR", "MODEL_DIR")
    )
    assert cells.index(drive) < min(i for i, c in enumerate(cells) if "SHARDS_DIR =" in c)


def strict_parser():
    """tld's parser with prefix abbreviations off everywhere, so `--val-prompt` cannot stand in
    for a flag renamed to `--val-prompts-file`."""
    from tld.cli import build_parser

    parser = build_parser()
    todo = [parser]
    while todo:
        p = todo.pop()
        p.allow_abbrev = False
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return parser


def test_tld_commands_parse(notebook):
    path, nb = notebook
    values = notebook_variables(nb)
    every = [c for text in code_cells(nb) for c in shell_commands(text)]
    for command in every:  # `!cat {MODEL_DIR}/config.json` too: every variable must be defined
        substitute(command, values)
    commands = [c for c in every if c.startswith("tld ")]
    assert commands, f"{path.name} uses no tld command"
    for command in commands:
        argv = shlex.split(substitute(command, values))[1:]
        try:
            args = strict_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{path.name}: `{command}` does not parse with tld's CLI (argv {argv})")
        assert getattr(args, "func", None), f"{path.name}: `{command}` names no tld subcommand"


def imported_names(nb: dict) -> dict[str, object]:
    """Every `from tld... import X` / `from tld.preprocessing... import X` resolved to its object."""
    found = {}
    for text in code_cells(nb):
        for node in ast.walk(ast.parse(python_source(text))):
            if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("tld", "preprocessing"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                    found[alias.asname or alias.name] = getattr(module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in ("tld", "preprocessing"):
                        importlib.import_module(alias.name)
    return found


def test_tld_imports_exist(notebook):
    _, nb = notebook
    assert imported_names(nb)


def _allowed_keywords(func) -> set[str] | None:
    """Parameter names of `func`; for TLDPipeline methods with **kwargs add what make_job accepts."""
    from tld.pipeline.sampling import SamplingDefaults, make_job

    params = inspect.signature(func).parameters
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return names
    pipeline_method = getattr(func, "__qualname__", "").split(".")[0] == "TLDPipeline"
    if pipeline_method or getattr(func, "__module__", "") == "tld.pipeline.edit":
        job = set(inspect.signature(make_job).parameters) - {"defaults", "default_schedule", "overrides"}
        return names | job | {f.name for f in fields(SamplingDefaults)}
    return None


def test_call_keywords_exist(notebook):
    """pipe(...), pipe.<method>(...) and imported tld callables are called with real keyword names."""
    from tld.diffusion import SAMPLERS
    from tld.pipeline import TLDPipeline

    path, nb = notebook
    imported = imported_names(nb)
    pipes: set[str] = set()
    checked = 0
    for text in code_cells(nb):
        tree = ast.parse(python_source(text))
        for node in ast.walk(tree):
            # `pipe = TLDPipeline.from_pretrained(...)` marks `pipe` as a pipeline.
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                f = node.value.func
                if (
                    isinstance(f, ast.Attribute)
                    and isinstance(f.value, ast.Name)
                    and f.value.id == "TLDPipeline"
                ):
                    pipes.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f, target = node.func, None
            if isinstance(f, ast.Name) and f.id in pipes:
                target = TLDPipeline.__call__
            elif isinstance(f, ast.Name) and callable(imported.get(f.id)):
                target = imported[f.id]
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                owner = TLDPipeline if f.value.id in pipes else imported.get(f.value.id)
                if inspect.isclass(owner):
                    assert hasattr(owner, f.attr), f"{path.name}: {owner.__name__} has no {f.attr}"
                    target = getattr(owner, f.attr)
            if target is None or not callable(target):
                continue
            allowed = _allowed_keywords(target)
            for kw in node.keywords:
                if kw.arg is None or allowed is None:
                    continue
                assert kw.arg in allowed, f"{path.name}: {ast.unparse(node)[:80]} - no keyword {kw.arg!r}"
                if kw.arg == "sampler" and isinstance(kw.value, ast.Constant):
                    assert kw.value.value in SAMPLERS
            checked += 1
    assert checked, f"{path.name}: no tld calls found to check"
    runs = notebook_variables(nb).get("SAMPLER_RUNS", [])
    assert all(name in SAMPLERS for name, _ in runs), runs


def test_training_config_builds():
    """The config dict of train_your_own.ipynb is a valid TrainConfig (unknown keys are errors)."""
    from tld.training import TrainConfig

    nb = load(COLAB / "train_your_own.ipynb")
    values = notebook_variables(nb)
    calls = [
        node
        for text in code_cells(nb)
        for node in ast.walk(ast.parse(python_source(text)))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "TrainConfig.from_dict"
    ]
    assert len(calls) == 1
    config = TrainConfig.from_dict(eval(compile(ast.Expression(calls[0].args[0]), "config", "eval"), values))
    assert config.mixed_precision == "bf16" and config.data.path == values["DATASET_DIR"]
    assert config.output_dir == values["RUN_DIR"] and config.steps == values["STEPS"]
    assert config.tracker == "tensorboard"


def test_broken_command_is_caught():
    """The checks can fail: a renamed flag does not parse, an unknown variable is reported."""
    with pytest.raises(SystemExit):
        strict_parser().parse_args(shlex.split("preprocess encode a b --text-model open_clip"))
    with pytest.raises(SystemExit):  # an abbreviation of a real flag is not accepted
        strict_parser().parse_args(shlex.split("preprocess encode a b --val-prompt p.txt"))
    with pytest.raises(AssertionError):
        substitute("tld export {NOWHERE} out", {})
