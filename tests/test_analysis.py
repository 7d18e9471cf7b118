"""analysis: collapse onset, matched-APL gap, core plateau, baselines and findings on hand-made frames."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from nonlinear_advantage import analysis
from nonlinear_advantage.analysis import CONTRADICTED, INCONCLUSIVE, SUPPORTED, Thresholds
from nonlinear_advantage.errors import UserError
from synthetic_study import write_study

TH = Thresholds.from_params()  # the schema's defaults


def row(arm, acc, apl, lam=0.0, seed=0, dataset="d", width=100, total=344, **extra):
    base = dict(run=f"{dataset}/{arm}/{lam}-{seed}-{extra.get('depth', 20)}-{extra.get('widened', False)}",
                dataset=dataset, arm=arm, arch="resnet", depth=20, width=8, activation="prelu",
                widened=False, lam=lam, seed=seed, params=1000, test_acc=acc, val_acc=acc, train_acc=acc,
                test_loss=0.1, penalty=0.0, nonlinear_channels=width, total_channels=total,
                apl_normalized=apl, apl_unnormalized=apl, eps=0.0, epochs=1, wall_time_s=1.0,
                images_per_s=1.0)
    base.update(extra)
    return base


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


DENSE = [row("dense", 0.90, 14.5, seed=0), row("dense", 0.92, 14.5, seed=1)]  # mean 0.91
SPARSE = [row("sparse", 0.915, 10, 0.001), row("sparse", 0.905, 6, 0.01), row("sparse", 0.90, 4, 0.03),
          row("sparse", 0.80, 2, 0.1)]


# ---------------------------------------------------------------- collapse onset


def test_onset_is_the_last_point_within_tolerance():
    onset = analysis.collapse_onset(frame(*DENSE, *SPARSE), tolerance=0.01)
    assert (onset.apl, onset.lam, onset.acc, onset.collapsed) == (4.0, 0.03, 0.90, True)
    assert onset.dense_acc == pytest.approx(0.91)


def test_onset_ignores_a_recovery_below_a_failure():
    onset = analysis.collapse_onset(frame(*DENSE, *SPARSE, row("sparse", 0.95, 1, 0.3)), tolerance=0.01)
    assert onset.apl == 4.0


def test_onset_averages_seeds_first():
    seeds = [row("sparse", 0.89, 4, 0.03, seed=0), row("sparse", 0.91, 4, 0.03, seed=1)]
    onset = analysis.collapse_onset(frame(*DENSE, *SPARSE[:2], *seeds, SPARSE[3]), tolerance=0.01)
    assert (onset.apl, onset.acc) == (4.0, pytest.approx(0.90))


def test_onset_without_collapse_is_the_smallest_apl_tested():
    onset = analysis.collapse_onset(frame(*DENSE, *SPARSE[:3]), tolerance=0.01)
    assert (onset.apl, onset.collapsed) == (4.0, False)


@pytest.mark.parametrize("rows, reason", [
    (SPARSE, "no dense run"),
    (DENSE, "no sparse runs"),
    (DENSE + [row("sparse", 0.5, 3, 0.1)], "every sparse run is below dense − tolerance"),
])
def test_onset_undefined(rows, reason):
    onset = analysis.collapse_onset(frame(*rows), tolerance=0.01)
    assert (onset.apl, onset.reason) == (None, reason)


def test_onset_needs_one_dataset():
    with pytest.raises(ValueError, match="one dataset"):
        analysis.collapse_onset(frame(*DENSE, row("dense", 0.9, 14, dataset="e")), 0.01)


# ---------------------------------------------------------------- matched APL


def test_matched_apl_gap_interpolates_on_the_common_range():
    df = frame(row("posthoc", 0.80, 2, 0.1), row("posthoc", 0.90, 6, 0.01),
               row("sparse", 0.60, 1, 0.1), row("sparse", 0.80, 4, 0.03), row("sparse", 0.90, 8, 0.01))
    gap = analysis.matched_apl_gap(df)
    np.testing.assert_allclose(gap.apl, [2, 4, 6])
    np.testing.assert_allclose(gap.posthoc, [0.80, 0.85, 0.90])
    np.testing.assert_allclose(gap.scratch, [0.60 + 0.2 / 3, 0.80, 0.85])
    assert gap.mean_gap == pytest.approx((0.2 - 0.2 / 3 + 0.05 + 0.05) / 3)
    assert gap.max_gap == pytest.approx(0.2 - 0.2 / 3)


def test_matched_apl_gap_without_overlap_or_arm():
    disjoint = frame(row("posthoc", 0.8, 9, 0.1), row("sparse", 0.8, 2, 0.1), row("sparse", 0.9, 3, 0.01))
    assert analysis.matched_apl_gap(disjoint).reason == "the two arms' APL ranges do not overlap"
    assert analysis.matched_apl_gap(frame(*SPARSE)).reason == "no post-hoc runs"


# ---------------------------------------------------------------- core plateau and baselines


PLATEAU = [row("sparse", 0.9, 10, 0.001, width=300), row("sparse", 0.9, 5, 0.003, width=120),
           row("sparse", 0.9, 4.5, 0.01, width=110), row("sparse", 0.9, 4.2, 0.03, width=100),
           row("sparse", 0.5, 1, 0.1, width=20)]


def test_core_plateau_finds_the_middle_of_the_sweep():
    p = analysis.core_plateau(frame(*PLATEAU), TH)
    assert (p.found, p.lam_lo, p.lam_hi, p.points, p.apl, p.width) == (True, 0.003, 0.03, 3, 4.5, 110)
    assert p.fraction == pytest.approx(110 / 344)


def test_core_plateau_rejects_a_still_dense_network():
    dense_ish = [{**r, "total_channels": 200} for r in PLATEAU]  # 110 of 200 channels: not a core
    assert not analysis.core_plateau(frame(*dense_ish), TH).found
    assert not analysis.core_plateau(frame(*PLATEAU), dataclasses.replace(TH, plateau=0.1)).found


def test_baselines_compared_at_their_apl():
    base = [row("baseline", 0.86, 3, depth=4, activation="relu"),
            row("baseline", 0.95, 5, depth=6, widened=True, activation="relu"),
            row("baseline", 0.9, 12, depth=14, activation="relu")]
    out = analysis.baseline_comparison(frame(*SPARSE, *base))
    assert out.sparse_acc.iloc[0] == pytest.approx(0.85)  # halfway between (2, 0.80) and (4, 0.90)
    assert out.sparse_acc.iloc[1] == pytest.approx(0.9025)
    assert np.isnan(out.sparse_acc.iloc[2])  # APL 12 lies beyond the sparse runs: no extrapolation
    assert out.sparse_wins.tolist() == [False, False, False]


# ---------------------------------------------------------------- findings


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> pd.DataFrame:
    return analysis.load_summary(write_study(tmp_path_factory.mktemp("study")))


def test_findings_on_the_synthetic_study(study):
    """Known effects, 3 seeds, small noise: every observation is supported."""
    verdicts = [f.verdict for f in analysis.findings(study, TH)]
    assert verdicts == [SUPPORTED] * 4, [f.evidence for f in analysis.findings(study, TH)]


def test_findings_are_contradicted_when_the_effect_reverses(study):
    hard = study.dataset == "fashion_mnist"
    worse = study.copy()  # post-hoc 8 points worse on the harder task: its gap clearly below 0
    worse.loc[hard & (worse.arm == "posthoc"), "test_acc"] -= 0.08
    assert analysis.finding_nonlinear_advantage(worse, TH).verdict == CONTRADICTED
    strong = study.copy()  # widened baselines 20 points better: sparse networks no longer beat them
    strong.loc[strong.widened, "test_acc"] += 0.2
    assert analysis.finding_decay_collapse(strong, TH).verdict == CONTRADICTED
    early = study.copy()  # the late start 8 points worse: linearizing late costs more
    early.loc[hard & (early.arm == "late"), "test_acc"] -= 0.08
    assert analysis.finding_early_late(early, TH).verdict == CONTRADICTED


def test_noise_makes_a_finding_inconclusive(tmp_path):
    """The same effects under noise of 5 pt per run and 2 seeds: the intervals straddle the margins."""
    noisy = analysis.load_summary(write_study(tmp_path, seeds=(0, 1), noise=0.05))
    advantage, late = analysis.finding_nonlinear_advantage(noisy, TH), analysis.finding_early_late(noisy, TH)
    assert advantage.verdict == late.verdict == INCONCLUSIVE, (advantage.evidence, late.evidence)


def test_intervals_combine_seeds_and_the_test_set():
    th = dataclasses.replace(TH, confidence=0.95)
    one = analysis.interval([0.02], 0.01, th)  # one seed: the test set's SE alone
    assert one.lo == pytest.approx(0.02 - 1.96 * 0.01, abs=1e-4) and one.above(0.0) == SUPPORTED
    spread = analysis.interval([0.0, 0.04], 0.0, th)  # two seeds: Student's t at 1 degree of freedom
    assert spread.lo < 0.02 < spread.hi and spread.above(0.0) == INCONCLUSIVE
    assert analysis.interval([-0.05, -0.04, -0.045], 0.001, th).above(0.0) == CONTRADICTED
    assert analysis.interval([0.001, -0.001, 0.0], 0.001, th).within(0.01) == SUPPORTED
    assert analysis.binomial_se(0.9, 10_000) == pytest.approx(0.003)
    # One seed and no test-set error (a slope, a core APL): nothing to decide with.
    assert analysis.interval([0.5], 0.0, th).above(0.0) == INCONCLUSIVE


def test_two_seeds_use_students_t_at_one_degree_of_freedom():
    """0.1 and 0.3: mean 0.2, sd 0.1414, sd/√2 = 0.1; t(0.975, 1) = 12.706, so 0.2 ± 1.2706."""
    iv = analysis.interval([0.1, 0.3], 0.0, dataclasses.replace(TH, confidence=0.95))
    assert (iv.mean, iv.lo, iv.hi, iv.seeds) == (pytest.approx(0.2), pytest.approx(0.2 - 1.2706, abs=1e-4),
                                                 pytest.approx(0.2 + 1.2706, abs=1e-4), 2)
    # with a test-set SE: the two half-widths add in quadrature, the SE at the normal quantile
    both = analysis.interval([0.1, 0.3], 0.01, dataclasses.replace(TH, confidence=0.95))
    assert both.hi - 0.2 == pytest.approx(np.hypot(1.2706, 1.96 * 0.01), abs=1e-4)


def test_collapse_tolerance_is_never_below_two_standard_errors(study):
    small = study.assign(test_size=100)  # SE of 90% on 100 images: 3 pt
    hard = small[small.dataset == "fashion_mnist"]
    assert analysis.effective_tolerance(hard, TH) == pytest.approx(2 * 0.03, abs=2e-3)
    assert analysis.effective_tolerance(study[study.dataset == "fashion_mnist"], TH) == TH.tolerance


def test_grid_span_says_where_a_grid_falls_short(study):
    span = analysis.grid_span(study, TH)
    assert span.ok.all() and set(zip(span.arm, span.start, strict=True)) == {("sparse", 0), ("posthoc", 0), ("late", 3)}
    dense_only = study[~((study.arm == "sparse") & (study.lam >= 0.01))]  # only the two densest λ left
    short = analysis.grid_span(dense_only, TH).set_index(["dataset", "arm"]).loc[("digits", "sparse")]
    assert not short.ok and "no point below 25%" in short.note and "transition" in short.note


def test_one_dataset_cannot_show_task_dependence(study):
    one = study[study.dataset == "digits"]
    core, _, advantage, _ = analysis.findings(one, TH)
    assert core.verdict == advantage.verdict == INCONCLUSIVE
    assert any("two datasets" in e for e in advantage.evidence)


def test_load_summary_errors_name_the_file(tmp_path):
    missing = tmp_path / "summary.csv"
    with pytest.raises(UserError, match=str(missing)):
        analysis.load_summary(missing)
    frame(*DENSE).drop(columns=["apl_normalized"]).to_csv(missing, index=False)
    with pytest.raises(UserError, match="missing columns apl_normalized"):
        analysis.load_summary(missing)


# ---------------------------------------------------------------- checks gate the verdicts


def test_every_check_passes_on_the_synthetic_study(study):
    failed = [c.text for c in analysis.checks(study, TH) if not c.passed]
    assert not failed, failed
    names = {c.name for c in analysis.checks(study, TH)}
    assert names == {analysis.SPAN, analysis.CONTROL, analysis.DENSE_VS_BASELINE, analysis.BELOW_ONSET,
                     analysis.SETTLED}


def test_a_failed_control_makes_the_advantage_inconclusive(study):
    """The post-hoc control (λ = 0 fine-tune) 5 pt below dense: its extra training is not neutral."""
    drifted = study.copy()
    drifted.loc[(drifted.dataset == "fashion_mnist") & (drifted.arm == "finetune"), "test_acc"] -= 0.05
    f = analysis.finding_nonlinear_advantage(drifted, TH)
    assert f.verdict == INCONCLUSIVE
    failed = [c for c in f.failed if c.name == analysis.CONTROL]
    assert [c.dataset for c in failed] == ["fashion_mnist"]
    assert any(e.startswith("inconclusive: control failed: fashion_mnist post-hoc control (λ = 0) − dense -4.8")
               and "beyond ±1.00 pt" in e for e in f.evidence), f.evidence
    assert f.numbers["failed_checks"][0]["name"] == "control"


def test_the_late_arms_control_is_the_dense_run(study):
    late = [c for c in analysis.checks(study, TH) if c.name == analysis.CONTROL and c.arm == "late"]
    assert len(late) == 2 and all(c.passed and c.value == 0.0 and "dense run itself" in c.text for c in late)


def test_the_gap_is_net_of_the_controls_extra_training(study):
    """Post-hoc and its control both 2 pt better (the extra epochs alone): the gap does not move."""
    sub = study[study.dataset == "fashion_mnist"]
    longer = sub.copy()
    longer.loc[longer.arm.isin(["posthoc", "finetune"]), "test_acc"] += 0.02
    before, after = analysis.matched_gap(sub, th=TH), analysis.matched_gap(longer, th=TH)
    assert after.mean == pytest.approx(before.mean)
    plain = analysis.matched_apl_gap(sub[sub.seed == 0]).mean_gap
    extra, _ = analysis.control_difference(sub, "posthoc", 0)
    assert before.per_seed[0] == pytest.approx(plain - extra)


def test_a_plateau_over_a_log_spaced_grid_supports_core_networks(study):
    """The synthetic grid is log-spaced (1e-3 … 1) and its core holds over 3 consecutive shifts past the
    transition, with every check passing: finding 1 is supported on both datasets."""
    lams = np.array(sorted(study[study.arm == "sparse"].lam.unique()))
    assert np.allclose(np.diff(np.log10(lams)), 0.5, atol=0.03)  # ~3× per step
    f = analysis.finding_core_networks(study, TH)
    assert f.verdict == SUPPORTED and not f.failed and f.checks, f.evidence
    for d in ("digits", "fashion_mnist"):
        p = analysis.core_plateau(study[study.dataset == d], TH)
        assert p.found and p.points >= 3


def test_a_seed_without_a_value_makes_its_part_inconclusive(study):
    """Seed 2 has no post-hoc runs on fashion_mnist: the gap is not averaged over the other two in silence."""
    gone = study[~((study.dataset == "fashion_mnist") & (study.arm == "posthoc") & (study.seed == 2))]
    g = analysis.matched_gap(gone[gone.dataset == "fashion_mnist"], th=TH)
    assert set(g.per_seed) == {0, 1} and g.missing == {2: "no post-hoc runs"}
    f = analysis.finding_nonlinear_advantage(gone, TH)
    assert f.verdict == INCONCLUSIVE
    assert any("seed 2: no post-hoc runs" in e for e in f.evidence), f.evidence


def test_an_unsettled_run_makes_its_findings_inconclusive(study):
    moving = study.copy()
    run = "fashion_mnist/late/at0.5-shift0.03-s1"
    assert run in set(moving.run)
    moving.loc[moving.run == run, "nonlinear_change"] = -40  # of 344 channels: still switching off
    f = analysis.finding_early_late(moving, TH)
    assert f.verdict == INCONCLUSIVE
    assert any("settled failed" in e and run in e for e in f.evidence), f.evidence
    assert analysis.finding_core_networks(moving, TH).verdict == SUPPORTED  # it rests on the sparse arm only


def test_points_below_the_onset_count_distinct_apls(study):
    """Runs that all end fully linear give the collapse no slope, however many there are: the check
    counts distinct APLs below the onset, and fails where the steepness cannot be measured."""
    sub = study[study.dataset == "digits"]
    onset = analysis.collapse_onset(sub, analysis.effective_tolerance(sub, TH)).apl
    flat = study.copy()
    below = (flat.dataset == "digits") & (flat.arm == "sparse") & (flat.apl_normalized < onset - 1e-9)
    assert below.groupby(flat.seed).sum().min() >= 3
    flat.loc[below, "apl_normalized"] = 0.0
    check = next(c for c in analysis.checks(flat, TH) if c.name == analysis.BELOW_ONSET and c.dataset == "digits")
    assert not check.passed and check.value == 1 and "1 distinct from-scratch APL(s)" in check.text
    f = analysis.finding_decay_collapse(flat, TH)
    assert any(c.name == analysis.BELOW_ONSET and c.dataset == "digits" for c in f.failed)  # named in its finding


def test_without_nonlinear_change_the_settled_check_cannot_pass(study):
    settled = [c for c in analysis.checks(study.drop(columns="nonlinear_change"), TH) if c.name == analysis.SETTLED]
    assert settled and not any(c.passed for c in settled)
    assert "no nonlinear_change column: rerun aggregate" in settled[0].text


def test_a_baseline_better_than_dense_makes_only_its_comparison_inconclusive(study):
    strong = study.copy()
    wide7 = (strong.dataset == "digits") & (strong.depth == 7) & strong.widened
    strong.loc[wide7, "test_acc"] = 0.99  # above dense (97.4%)
    failed = [c for c in analysis.checks(strong, TH) if not c.passed]
    assert [(c.name, c.subject) for c in failed] == [(analysis.DENSE_VS_BASELINE, "plain-7 (widened)")]
    f = analysis.finding_decay_collapse(strong, TH)
    assert f.verdict == INCONCLUSIVE and any("dense vs baseline failed" in e for e in f.evidence)
