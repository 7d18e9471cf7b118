"""Training jobs' time limits and memory from the plan, and the benchmarks' compute per arm."""

import math
from pathlib import Path

import pytest
import yaml

from nonlinear_advantage import compute, plan
from nonlinear_advantage.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = plan.load_params(ROOT / "tests" / "fixtures" / "tiny_params.yaml")
# What Snakemake hands over from a profile's `config: compute:` (its numbers as strings).
RAW = {"seconds_per_image": {"resnet": "0.15", "plain": "0.075"}, "margin": "1", "startup_minutes": "1",
       "min_minutes": "1"}


def test_calibration_from_the_profiles_config():
    cal = compute.Calibration.from_config(RAW)
    assert cal == compute.Calibration({"resnet": 0.15, "plain": 0.075}, 1.0, 1.0, 1)
    assert compute.Calibration.from_config(None) is None  # no profile calibration: no runtime
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert compute.Calibration.from_config(profile["config"][compute.CONFIG_KEY]).margin >= 1


@pytest.mark.parametrize("raw, message", [
    ({**RAW, "margin": "x"}, "not a number"),
    ({k: v for k, v in RAW.items() if k != "margin"}, "must hold exactly"),
    ({**RAW, "seconds_per_image": "0.1"}, "must hold exactly"),
])
def test_a_bad_calibration_is_a_user_error(raw, message):
    with pytest.raises(UserError, match=message):
        compute.Calibration.from_config(raw)


def test_time_limit_is_epochs_times_images_times_the_architectures_cost():
    cal = compute.Calibration({"resnet": 0.15, "plain": 0.075}, margin=2.0, startup_minutes=1.0, min_minutes=1)
    images = TINY["datasets"]["digits"]["train_size"]
    for run in plan.run_ids(TINY):
        config = plan.run_config(TINY, run)
        seconds = 2.0 * plan.trained_epochs(config) * images * cal.seconds_per_image[config["model"]["arch"]]
        assert compute.train_minutes(TINY, run, cal) == math.ceil(1 + seconds / 60), run
        assert compute.train_minutes(TINY, run, cal, attempt=2) == 2 * compute.train_minutes(TINY, run, cal)
    # a plain baseline is charged its architecture's cost
    assert compute.train_minutes(TINY, "digits/shallow/d3-own-s0", cal) < compute.train_minutes(
        TINY, "digits/baseline/d8-own-s0", cal)


def test_a_job_that_continues_a_state_is_charged_the_epochs_it_trains():
    """B = 10, P = 3, the late prior from epoch 5: the dense job trains 10 epochs, a late one 5, a
    post-hoc or finetune one 3 (the dense run trained the rest)."""
    params = {**TINY, "datasets": {"digits": {**TINY["datasets"]["digits"], "epochs": 10}},
              "posthoc": {**TINY["posthoc"], "epochs": 3}}
    cal = compute.Calibration({"resnet": 1 / 400, "plain": 1 / 400}, margin=60.0, startup_minutes=0.0, min_minutes=0)
    minutes = {run: compute.train_minutes(params, run, cal) for run in plan.run_ids(params)}  # one a training epoch
    assert minutes["digits/dense/s0"] == 10 == minutes["digits/sparse/shift1.5-s0"]
    assert minutes["digits/late/at0.5-shift1.5-s0"] == 5
    assert minutes["digits/posthoc/shift1.5-s0"] == 3 == minutes["digits/finetune/s0"]
    # and the benchmarks' seconds per image-epoch count the same epochs
    assert compute._trained_epochs({"arm": "posthoc", "epochs": "13", "prior_start_epoch": "10"}) == 3
    assert compute._trained_epochs({"arm": "sparse", "epochs": "10", "prior_start_epoch": "0"}) == 10


    floor = compute.Calibration({"resnet": 1e-9, "plain": 1e-9}, 1.0, 0.0, 7)
    assert compute.train_minutes(TINY, "digits/dense/s0", floor) == 7
    with pytest.raises(UserError, match="no cost for architecture 'plain'"):
        compute.train_minutes(TINY, "digits/shallow/d3-own-s0", compute.Calibration({"resnet": 1.0}, 1, 1, 1))


def test_memory_grows_with_the_data():
    small = compute.train_mem_mb(TINY, "digits/dense/s0")
    assert compute.OVERHEAD_MB < small < compute.OVERHEAD_MB + 10
    paper = plan.load_params(ROOT / "config" / "paper.yaml")
    cifar = compute.train_mem_mb(paper, "cifar10/dense/s0")  # 60,000 images of 3x32x32
    assert cifar == compute.OVERHEAD_MB + math.ceil(compute.BYTES_PER_PIXEL * 60_000 * 3 * 32 * 32 / 2**20)


def test_the_rules_resources_need_a_calibration_for_runtime():
    class Wildcards:
        run = "digits/dense/s0"

    assert set(compute.train_resources(TINY, None)) == {"mem_mb"}
    resources = compute.train_resources(TINY, compute.Calibration.from_config(RAW))
    assert resources["mem_mb"](Wildcards) == compute.train_mem_mb(TINY, Wildcards.run)
    assert resources["runtime"](Wildcards, attempt=2) == 2 * resources["runtime"](Wildcards, attempt=1)


def _bench(path: Path, seconds: float, rss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t0\t{seconds / 2}\n")


def test_benchmarks_summed_per_arm(tmp_path):
    rows = [{"run": "d/dense/s0", "arm": "dense", "dataset": "d", "epochs": 2},
            {"run": "d/sparse/a-s0", "arm": "sparse", "dataset": "d", "epochs": 2},
            {"run": "d/sparse/b-s0", "arm": "sparse", "dataset": "d", "epochs": 2},
            {"run": "d/baseline/x-s0", "arm": "baseline", "dataset": "d", "epochs": 2}]  # no benchmark file
    _bench(tmp_path / "train" / "d/dense/s0.tsv", 10.0, 100.0)
    _bench(tmp_path / "train" / "d/sparse/a-s0.tsv", 20.0, 300.0)
    _bench(tmp_path / "train" / "d/sparse/b-s0.tsv", 30.0, 200.0)
    arms = compute.per_arm(rows, tmp_path, {"d": 100})
    assert [a["arm"] for a in arms] == ["dense", "sparse"]  # the arm table's order
    sparse = arms[1]
    assert (sparse["jobs"], sparse["seconds"], sparse["cpu_seconds"], sparse["max_rss_mb"]) == (2, 50.0, 25.0, 300.0)
    assert sparse["seconds_per_image"] == pytest.approx(50.0 / (2 * 2 * 100))
    assert compute.per_arm(rows, tmp_path / "none", {"d": 100}) == []
    (tmp_path / "train" / "d/dense/s0.tsv").write_text("s\n")  # cut off: skipped, not an error
    assert [a["arm"] for a in compute.per_arm(rows, tmp_path, {})] == ["sparse"]
