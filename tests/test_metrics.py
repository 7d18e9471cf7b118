"""results/metrics.json: the study's dense accuracies, collapse onsets and verdicts with their numbers."""

import json

import pytest

from nonlinear_advantage import analysis, cli, metrics, plan
from synthetic_study import write_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return write_study(root)


def test_metrics_hold_every_verdict_and_the_numbers_behind_it(study, tmp_path):
    out = tmp_path / "metrics.json"
    assert cli.main(["metrics", "--summary", str(study), "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    df, th = analysis.load_summary(study), analysis.Thresholds.from_params()
    found = analysis.findings(df, th)
    assert {k: f["verdict"] for k, f in m["findings"].items()} == {metrics.finding_key(f.title): f.verdict
                                                                  for f in found}
    assert set(m["findings"]) == {"core_networks", "slow_decay_then_collapse", "nonlinear_advantage",
                                  "early_versus_late"}
    for d in ("digits", "fashion_mnist"):
        sub = df[df.dataset == d]
        assert m["dense_acc"][d] == pytest.approx(analysis.dense_accuracy(sub), rel=1e-5)
        onset = analysis.collapse_onset(sub, analysis.effective_tolerance(sub, th))
        assert m["collapse_onset"][d]["apl"] == pytest.approx(onset.apl, rel=1e-5)
        assert m["collapse_onset"][d]["fraction_of_dense_apl"] == pytest.approx(
            onset.apl / analysis.dense_apl(sub), rel=1e-5)
        # the interval that decides the nonlinear advantage, as the evidence states it
        gap = analysis.matched_gap(sub, plan.POSTHOC, plan.SPARSE, th).interval
        assert m["findings"]["nonlinear_advantage"][d]["posthoc_minus_sparse"] == pytest.approx(
            {"mean": gap.mean, "lo": gap.lo, "hi": gap.hi, "seeds": gap.seeds}, rel=1e-5)
        assert "collapse_steepness" in m["findings"]["slow_decay_then_collapse"][d]
    assert len(m["checks"]) == len(analysis.checks(df, th)) and all(c["passed"] for c in m["checks"])
    assert set(m["checks"][0]) == {"name", "dataset", "subject", "value", "threshold", "passed"}
    again = tmp_path / "again.json"
    metrics.write_metrics(study, again)
    assert again.read_bytes() == out.read_bytes()  # the same summary, the same bytes


def test_unbounded_and_missing_values_are_null():
    iv = analysis.Interval(0.1, -float("inf"), float("inf"), 1)  # one seed, no test-set error
    assert iv.numbers() == {"mean": 0.1, "lo": None, "hi": None, "seeds": 1}
    assert metrics._clean({"a": float("nan"), "b": [1.23456789, None]}) == {"a": None, "b": [1.23457, None]}
    assert metrics.finding_key("Slow decay, then collapse") == "slow_decay_then_collapse"
