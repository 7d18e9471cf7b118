"""The rules' conda envs pin the same versions as pyproject.toml, every rule names one, and each
env pins what its rules' code imports; pyproject declares every import."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from nonlinear_advantage import cli, plan

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "workflow" / "envs").glob("*.yaml"))


def pins(requirements) -> dict[str, str]:
    out = {}
    for req in requirements:
        name, sep, version = req.partition("==")
        assert sep, f"{req!r} is not pinned with =="
        out[name.strip().lower()] = version.strip()
    return out


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PROJECT_PINS = pins(PYPROJECT["dependencies"])


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_pins_agree_with_pyproject(env):
    spec = yaml.safe_load(env.read_text())
    deps = spec["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    assert python == "python=" + re.search(r">=(\d+\.\d+)", PYPROJECT["requires-python"]).group(1)
    for name, version in pins(pip).items():
        pinned = PROJECT_PINS.get(name)
        assert pinned == version, f"{env.name}: {name}=={version}, pyproject has {pinned}"


def test_every_rule_names_an_existing_env():
    rules = ROOT / "workflow" / "rules"
    for smk in rules.glob("*.smk"):
        text = smk.read_text()
        assert len(re.findall(r"^rule \w+:", text, re.M)) == text.count("conda:"), f"{smk.name}: a rule without conda:"
        for env in re.findall(r'conda:\s*"([^"]+)"', text):
            assert (rules / env).resolve() in [e.resolve() for e in ENVS], f"{smk.name}: {env}"


# ---- what the code imports ------------------------------------------------------------------

DISTRIBUTION = {"yaml": "pyyaml", "sklearn": "scikit-learn"}  # import name -> pip name, where they differ
# Imported inside a function that no stage of that env calls: fileio's torch_save and torch_load
# (the analysis stages use fileio for CSV and JSON only; the import check below runs them without torch).
LAZY = {"torch": "fileio"}
# Needed, though not imported: digits is read from scikit-learn's bundled copy (datasets.py finds it
# without importing it); snakemake and dvc are the tools that run the stages.
DATA_ONLY = {"data": {"scikit-learn"}}
TOOLS = {"snakemake", "dvc"}


def imports(modules) -> dict[str, set[str]]:
    """Third-party distributions the package modules import (anywhere in them) -> the modules that do."""
    found: dict[str, set[str]] = {}
    for module in modules:
        for node in ast.walk(ast.parse((plan.PACKAGE / f"{module}.py").read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "nonlinear_advantage":
                    found.setdefault(DISTRIBUTION.get(top, top), set()).add(module)
    return found


def closure(module: str) -> set[str]:
    """Every package module ``module`` imports, directly or not (plan.code_modules less nothing:
    the registry tables it leaves out of a stage's code are imported all the same)."""
    seen, todo = set(), [module, *plan.ENTRY_MODULES]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += plan._imports(name)
    return seen


def rule_envs() -> dict[str, tuple[str, str]]:
    """Rule -> (the stage module its command runs, its env file's name), from workflow/rules/*.smk."""
    out = {}
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", smk.read_text(), re.M | re.S):
            command = re.search(r"python -m nonlinear_advantage ([\w-]+)", body)[1]
            out[rule] = (cli.COMMAND_MODULE[command], Path(re.search(r'conda:\s*"([^"]+)"', body)[1]).name)
    return out


def env_pins(name: str) -> set[str]:
    deps = yaml.safe_load((ROOT / "workflow" / "envs" / name).read_text())["dependencies"]
    return set(pins(next(d["pip"] for d in deps if isinstance(d, dict))))


def test_every_env_pins_what_its_rules_import_and_nothing_else():
    needed: dict[str, set[str]] = {}
    for rule, (module, env) in rule_envs().items():
        used = {dist for dist, where in imports(closure(module)).items()
                if where != {LAZY.get(dist)}} | DATA_ONLY.get(module, set())
        missing = used - env_pins(env)
        assert not missing, f"rule {rule} ({module}) imports {sorted(missing)}, not pinned in {env}"
        needed.setdefault(env, set()).update(used)
    for env, used in needed.items():
        assert env_pins(env) == used, f"{env} pins {sorted(env_pins(env) - used)} that none of its rules imports"


def test_pyproject_declares_every_import_and_nothing_unused():
    modules = [p.stem for p in plan.PACKAGE.glob("*.py")]
    used = set(imports(modules)) | set().union(*DATA_ONLY.values())
    assert used <= set(PROJECT_PINS), f"imported, not declared: {sorted(used - set(PROJECT_PINS))}"
    assert set(PROJECT_PINS) - used == TOOLS, f"declared, imported nowhere: {sorted(set(PROJECT_PINS) - used - TOOLS)}"


def test_the_analysis_commands_run_without_torch(tmp_path):
    """What the analysis env's rules run imports no torch (torch is blocked), and configure runs."""
    commands = sorted({module for module, env in rule_envs().values() if "torch" not in env_pins(env)})
    assert {"plan", "aggregate", "metrics", "figures", "report"} <= set(commands)
    # An import hook, not sys.modules['torch'] = None: scipy looks torch up in sys.modules and trips on a None.
    block = ("import sys, importlib.abc\n"
             "class Block(importlib.abc.MetaPathFinder):\n"
             "    def find_spec(self, name, path, target=None):\n"
             "        if name.split('.')[0] == 'torch': raise ImportError('torch is blocked')\n"
             "sys.meta_path.insert(0, Block()); from nonlinear_advantage import cli; ")
    code = block + f"cli.build_parser({tuple(commands)!r}); sys.exit(cli.main(sys.argv[1:]))"
    tiny = ROOT / "tests" / "fixtures" / "tiny_params.yaml"
    proc = subprocess.run([sys.executable, "-c", code, "configure", "--params", str(tiny), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "torch" not in proc.stderr and list(tmp_path.rglob("*.yaml"))


def test_ci_caches_pip_and_installs_cpu_torch_at_the_pin():
    steps = yaml.safe_load((ROOT / ".github" / "workflows" / "report.yml").read_text())["jobs"]["report"]["steps"]
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "pyproject.toml"
    torch = next(s for s in steps if "torch==" in s.get("run", ""))
    assert "--index-url" in torch["run"] and "/whl/cpu" in torch["run"]
    assert steps.index(torch) < next(i for i, s in enumerate(steps) if "make test" in s.get("run", ""))
    assert re.search(r"grep -o 'torch==\[0-9\.\]\*' pyproject\.toml", torch["run"])  # the pin, not a copy
    assert "torch" in PROJECT_PINS


def test_license_and_citation_match_the_package():
    assert PYPROJECT["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) ")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == PYPROJECT["version"] and cff["license"] == "MIT" and cff["type"] == "software"
    [paper] = cff["references"]
    assert "2211.17180" in paper["url"] and paper["year"] == 2023
    assert [a["family-names"] for a in paper["authors"]] == ["Ali Mehmeti-Göpel", "Disselhoff"]
