"""The README a newcomer reads: short, and every command and number in it true."""

import re

import pytest

from nonlinear_advantage import cli, plan
from repo_copy import ROOT

README = (ROOT / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in (ROOT / "docs").glob("*.md")}


def test_it_is_short():
    assert README.count("\n") <= 150


def test_make_targets_exist():
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
    used = set(re.findall(r"\bmake ([a-z-]+)", README))
    assert {"reproduce", "test"} <= used and used <= targets, used - targets
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", ["params.yaml", "config/laptop.yaml", "config/paper.yaml"])
def test_run_counts_are_the_plans(path):
    """The README names each study's run count; validate-params counts the same runs."""
    runs = len(plan.run_ids(plan.load_params(ROOT / path)))
    assert f"{runs} runs" in README, (path, runs)


def test_every_command_is_a_command_of_the_package():
    for text in (README, *DOCS.values()):
        for command in re.findall(r"python -m nonlinear_advantage ([a-z][a-z-]*)", text):
            assert command in cli.COMMAND_MODULE, command


def test_every_linked_file_exists():
    for path in re.findall(r"`(docs/[\w./-]+)`|\]\(([\w./-]+)\)", README):
        name = next(p for p in path if p)
        assert (ROOT / name).is_file(), name
