"""A plain (non-editable) install works, as on a cluster node or in a container: the schemas
ship inside the package, and nothing reads the checkout the package was built from."""

import shutil
import subprocess
import sys

import pytest
import yaml

from repo_copy import ENV, ROOT, TINY, copy_repo


@pytest.mark.slow
def test_pip_install_dot_validates_configures_and_trains_from_another_directory(tmp_path):
    source = copy_repo(tmp_path / "source")
    target = tmp_path / "site"
    # --no-deps: the dependencies are this venv's; --no-build-isolation: no download of setuptools.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, env=ENV)
    shutil.rmtree(source)  # the install must not need its source tree
    assert (target / "nonlinear_advantage" / "schema_files" / "params.schema.json").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**ENV, "PYTHONPATH": str(target)}  # ahead of this checkout's editable install

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "nonlinear_advantage", *map(str, args)], cwd=elsewhere,
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    where = subprocess.run([sys.executable, "-c", "import nonlinear_advantage; print(nonlinear_advantage.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True).stdout
    assert where.startswith(str(target)), where
    shutil.copy(TINY, elsewhere / "params.yaml")
    assert "valid, 10 runs" in cli("validate-params", "params.yaml")
    # the generated files of a checkout match what the installed package generates
    assert "up to date" in cli("generate", "--check", "--root", ROOT)
    cli("configure", "--params", "params.yaml", "--out", "configs")
    cli("download", "digits", "--out", "data/raw/digits")
    cli("prepare", "digits", "--raw", "data/raw/digits", "--out", "data/prepared/digits.pt", "--train-size", "400",
        "--val-size", "100", "--test-size", "300", "--seed", "0")
    cli("train", "--config", "configs/digits/dense/s0.yaml", "--out", "runs/digits/dense/s0")
    assert yaml.safe_load((elsewhere / "runs/digits/dense/s0/config.yaml").read_text())["name"] == "digits/dense/s0"
