"""The rules' conda envs pin the same versions as pyproject.toml, and every rule names one."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

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
