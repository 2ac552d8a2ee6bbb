"""Tests of kpe_lib.experiments.semantics_guidance: the CIFAR backend's wiring and the classifier scorer."""
import pytest
import torch
from torch import nn

from kpe_lib.models.guidance import class_balanced_noise, sample_guided
from kpe_lib.models import Classifier, UNet
from kpe_lib.experiments.semantics_guidance import cifar_backend, classifier_semantics, unit_from_symmetric


class FixedLogits(nn.Module):
    """Logits that are a fixed linear map of the image mean per channel (known by hand)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, -1.0]]), requires_grad=False)

    def forward(self, x):
        return x.mean(dim=(2, 3)) @ self.w.T


def test_classifier_semantics_batches_and_scores_by_hand():
    clf = FixedLogits()
    images = torch.rand(7, 3, 4, 4)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0])
    res = classifier_semantics(clf, batch_size=3)(images, labels)
    logits = clf(images).double()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.gather(1, (1 - labels)[:, None]).squeeze(1)
    assert torch.allclose(res.margin, true - other, atol=1e-6)
    assert torch.allclose(res.score, torch.log_softmax(logits, 1).gather(1, labels[:, None]).squeeze(1), atol=1e-6)
    assert res.backend == "classifier"


def test_unit_from_symmetric_maps_and_clips():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.2])
    assert unit_from_symmetric(x).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_cifar_backend_runs_the_chapter_pipeline_end_to_end():
    torch.manual_seed(0)
    unet = UNet(in_channels=3, width=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), num_classes=4).eval()
    clf = Classifier(in_channels=3, num_classes=4, width=8).eval()
    backend = cifar_backend(unet, clf, ["a", "b", "c", "d"], resolution=8)
    noise = class_balanced_noise(6, backend.sample_shape, backend.num_classes, seed=0)
    run = sample_guided(backend.model, noise.x0, noise.labels, scale=1.5, n_steps=3, guide=backend.guide)
    images = backend.to_images(run.x)
    sem = backend.semantics(images, run.labels)
    assert images.shape == (6, 3, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert sem.score.shape == (6,) and bool((sem.score <= 0).all()) and run.model_evals == 6


def test_cifar_backend_refuses_an_unconditional_or_mismatched_model():
    clf = Classifier(in_channels=3, num_classes=4, width=8)
    with pytest.raises(ValueError, match="class-conditional"):
        cifar_backend(UNet(in_channels=3, width=8, channel_mult=(1, 2), attn_levels=()), clf, list("abcd"), 8)
    with pytest.raises(ValueError, match="num_classes"):
        cifar_backend(UNet(in_channels=3, width=8, channel_mult=(1, 2), attn_levels=(), num_classes=3), clf,
                      list("abcd"), 8)


def test_load_reference_batch_reads_adm_layout(tmp_path):
    import numpy as np

    from kpe_lib.experiments.semantics_guidance import load_reference_batch

    arr = np.random.default_rng(0).integers(0, 256, size=(5, 4, 6, 3), dtype=np.uint8)
    path = tmp_path / "ref.npz"
    np.savez(path, arr_0=arr)
    x = load_reference_batch(path, n=3)
    assert x.shape == (3, 3, 4, 6) and x.dtype == torch.float32
    assert torch.equal(x[1, 2], torch.from_numpy(arr[1, :, :, 2]).float() / 255)
    with pytest.raises(FileNotFoundError, match="VIRTUAL_imagenet256"):
        load_reference_batch(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="n must be"):
        load_reference_batch(path, n=6)
    np.savez(tmp_path / "bad.npz", images=arr)
    with pytest.raises(ValueError, match="arr_0"):
        load_reference_batch(tmp_path / "bad.npz")


def test_paper_backend_drives_the_tiny_paper_pipeline():
    from kpe_lib.experiments.semantics_guidance.paper_pipeline import tiny_paper_pipeline
    from kpe_lib.experiments.semantics_guidance import paper_backend

    backend = paper_backend(tiny_paper_pipeline(seed=0))
    noise = class_balanced_noise(4, backend.sample_shape, backend.num_classes, seed=0)
    r1 = sample_guided(backend.model, noise.x0, noise.labels, scale=1.0, n_steps=2, guide=backend.guide)
    r2 = sample_guided(backend.model, noise.x0, noise.labels, scale=2.0, n_steps=2, guide=backend.guide)
    assert r1.model_evals == 2 and r2.model_evals == 4
    assert not torch.allclose(r1.kpe, r2.kpe)  # guidance changes the field, hence the energy
    images = backend.to_images(r2.x)
    assert images.shape[:2] == (4, 3) and 0 <= float(images.min()) and float(images.max()) <= 1
    sem = backend.semantics(images, noise.labels)
    assert sem.score.shape == (4,) and torch.isfinite(sem.margin).all() and backend.protocol["ema"] is True
    with pytest.raises(ValueError, match="lacks"):
        paper_backend(object())


# --- the chapter's computations moved out of the notebook (prepare, analysis, kts, figures) ------------------

import types

import numpy as np

from kpe_lib import KTS
from kpe_lib.metrics.groups import GroupComparison
from kpe_lib.metrics.semantic import SemanticResult
from kpe_lib.experiments.semantics_guidance import analysis, kts as kts_mod, prepare


def _comparison(mean_low, mean_high, welch_p, mw_p=None):
    return GroupComparison(mean_low=mean_low, std_low=1.0, n_low=5, mean_high=mean_high, std_high=1.0, n_high=5,
                           diff=mean_high - mean_low, welch_t=0.0, welch_dof=8.0, welch_p=welch_p, mw_u=0.0,
                           mw_p=welch_p if mw_p is None else mw_p, rank_biserial=0.0)


@pytest.fixture(scope="module")
def tiny_chapter():
    """A 4-class 8x8 backend, its main run (12 samples: 3 per class) and a 2-scale sweep."""
    torch.manual_seed(0)
    unet = UNet(in_channels=3, width=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(), num_classes=4).eval()
    with torch.no_grad():  # the UNet's zero-initialised layers would give v = 0, hence KPE = 0
        for p in unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    clf = Classifier(in_channels=3, num_classes=4, width=8).eval()
    backend = cifar_backend(unet, clf, ["a", "b", "c", "d"], resolution=8, protocol={"ema": True})
    main = analysis.main_guided_run(backend, 12, guidance=1.5, n_steps=3, seed=1, batch_size=5)
    sweep = analysis.guidance_sweep(backend, main, [1.0, 1.5], guidance=1.5, n=8, n_steps=3)
    return backend, main, sweep


def test_loss_window_and_unet_config_by_hand():
    window, first, last = prepare.loss_window(np.arange(1.0, 11.0))   # 10 steps: window 2
    assert (window, first, last) == (2, 1.5, 9.5)
    assert prepare.loss_window(np.array([3.0, 1.0]))[0] == 1
    cfg = prepare.unet_config(32, (1, 2), 1, (1,), 0.0)
    assert cfg == {"kind": "unet", "in_channels": 3, "width": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                   "attn_levels": [1], "dropout": 0.0, "num_classes": 10}


def test_fid_reference_splits_reference_and_held_out(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(prepare, "reference_set", lambda images, description, **kw: seen.update(
        images=images, description=description, **kw) or "REF")
    images = torch.arange(10.0).reshape(10, 1, 1, 1)
    ref = prepare.fid_reference(images, 4, 3, resolution=8, cache=tmp_path)
    assert ref.reference == "REF" and seen["cache_dir"] == tmp_path / "fid"
    assert seen["images"].flatten().tolist() == [0, 1, 2, 3] and ref.real_held_out.flatten().tolist() == [4, 5, 6]
    assert "first 4 images, 8x8" in ref.description["reference"]


def test_main_guided_run_matches_sample_guided_and_scores(tiny_chapter):
    backend, main, _ = tiny_chapter
    noise = class_balanced_noise(12, backend.sample_shape, 4, seed=1)
    direct = sample_guided(backend.model, noise.x0, noise.labels, scale=1.5, n_steps=3, batch_size=5,
                           guide=backend.guide)
    assert torch.equal(main.samples.x, direct.x) and torch.equal(main.kpe, direct.kpe) and (main.kpe > 0).all()
    assert main.labels.tolist() == [0, 1, 2, 3] * 3 and main.images.shape == (12, 3, 8, 8)
    assert torch.equal(main.correct, (main.sem.margin > 0).double())
    assert "12 samples, CFG 1.5, NFE 3 (6 network evaluations" in main.summary()


def test_group_study_cuts_thirds_and_compares_by_hand():
    kpe = torch.arange(12.0, dtype=torch.float64)
    labels = torch.arange(12) % 2
    sem = SemanticResult(score=kpe * 2.0, margin=-kpe, backend="test")
    study = analysis.group_study(kpe, sem, None, labels, "thirds", score_name="s", margin_name="m", seed=0,
                                 n_boot=50)
    assert study.groups.low.nonzero()[0].tolist() == [0, 1, 2, 3]
    assert study.groups_cls.low.nonzero()[0].tolist() == [0, 1, 2, 3]   # 2 lowest of each parity
    assert study.score_cmp.mean_low == 3.0 and study.score_cmp.mean_high == 19.0   # 2 * mean(0..3), 2 * mean(8..11)
    assert study.margin_cmp.diff == -8.0 and set(study.comparisons) == {(c, q) for c in ("global", "within class")
                                                                         for q in ("s", "m")}
    assert study.table.shape[0] == 4 and study.rho_score.value == pytest.approx(1.0)
    assert "Spearman(KPE, score) = +1.00" in study.spearman_line()


def test_class_summary_and_extremes_by_hand():
    kpe = torch.tensor([1.0, 10.0, 2.0, 20.0, 3.0, 30.0], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    sem = SemanticResult(score=-kpe, margin=kpe, backend="test")
    groups = analysis.kpe_groups(kpe, "halves")
    correct = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    summary = analysis.class_summary(kpe, sem, correct, labels, groups, ["x", "y"])
    assert summary.table.loc["x", "mean KPE"] == 2.0 and summary.table.loc["y", "mean margin"] == 20.0
    assert summary.table.loc["x", "in low group"] == 3 and summary.table.loc["y", "accuracy"] == pytest.approx(1 / 3)
    assert summary.rho_class is None   # fewer than 3 classes
    everyone = np.ones(6, bool)
    low = analysis.per_class_extremes(everyone, False, 2, kpe, labels, 2)
    high = analysis.per_class_extremes(everyone, True, 2, kpe, labels, 2)
    assert [r.tolist() for r in low] == [[0, 2], [1, 3]] and [r.tolist() for r in high] == [[4, 2], [5, 3]]


def test_standard_error_and_sweep_trend():
    assert analysis.standard_error(torch.tensor([1.0, 3.0])) == pytest.approx(np.sqrt(2) / np.sqrt(2))
    table = analysis.pd.DataFrame({"mean KPE": [1.0, 2.0, 3.0], "mean score": [3.0, 2.0, 1.0],
                                   "mean margin": [1.0, 3.0, 2.0]})
    trend = analysis.sweep_trend([1.0, 2.0, 3.0], table)
    assert trend == pytest.approx({"KPE": 1.0, "score": -1.0, "margin": 0.5})
    assert np.isnan(analysis.sweep_trend([1.0, 2.0], table.iloc[:2])["KPE"])


def test_guidance_sweep_reuses_the_main_run(tiny_chapter):
    _, main, sweep = tiny_chapter
    assert list(sweep.runs) == [1.0, 1.5] and sweep.n == 8
    assert torch.equal(sweep.runs[1.5]["kpe"], main.kpe[:8])
    assert list(sweep.table.index) == [1.0, 1.5] and "accuracy" in sweep.table
    assert sweep.table.loc[1.5, "mean KPE"] == float(main.kpe[:8].mean())


def test_kts_study_metrics_and_protocol(tiny_chapter, monkeypatch):
    backend, main, sweep = tiny_chapter
    fake = lambda ref, images, protocol, device="cpu": types.SimpleNamespace(  # noqa: E731
        fid=float(images.mean()), precision=0.5, recall=0.25, protocol=dict(protocol),
        kid=types.SimpleNamespace(value=float(images.std()), ci=(0.0, 1.0)))
    monkeypatch.setattr(kts_mod, "sample_quality", fake)
    ref = prepare.FidReference(reference=types.SimpleNamespace(n=7), real_held_out=torch.rand(5, 3, 8, 8),
                             description={"reference": "R"})
    settings = {"FM": None, "launch": KTS(alpha0=0.05, beta0=0.0, tau_split=0.6)}
    study = kts_mod.kts_study(backend, main, settings, ref, guidance=1.5, n=6, n_steps=3)
    assert torch.equal(study.runs["FM"]["kpe"], main.kpe[:6])
    assert float(study.runs["launch"]["kpe_early"].mean()) > float(study.runs["FM"]["kpe_early"].mean())
    assert list(study.table.index) == ["FM", "launch", "real images (floor)"]
    assert study.quality["launch"].protocol["kts"] == {"kind": "KTS", "alpha0": 0.05, "beta0": 0.0, "tau_split": 0.6,
                                                       "launch": "linear", "landing": "exponential", "k": 3.0}
    assert "6 vs 7 images" in study.fid_protocol and "reference: R" in study.fid_protocol
    groups = analysis.group_study(main.kpe, main.sem, main.correct, main.labels, "thirds", score_name="s",
                                  margin_name="m", n_boot=20)
    cls = groups.comparisons[("within class", "s")]
    metrics = kts_mod.chapter_metrics(groups, cls, sweep, study, classifier_accuracy=0.5, correct=main.correct,
                                      tests={"t": {"test": "x"}})
    assert metrics["fid_launch"] == study.quality["launch"].fid and metrics["fid_real_floor"] == float(
        ref.real_held_out.mean())
    assert set(metrics["sweep"]) == {"1", "1.5"} and metrics["group_size"] == 4
    assert metrics["generated_accuracy"] == float(main.correct.mean()) and "verdicts" not in metrics
    margin_cls = groups.comparisons[("within class", "m")]
    assert (metrics["margin_low_within_class"], metrics["margin_high_within_class"]) == (margin_cls.mean_low,
                                                                                       margin_cls.mean_high)
    assert metrics["margin_within_class_welch_p"] == margin_cls.welch_p and metrics["tests"] == {"t": {"test": "x"}}
    assert metrics["kid_launch"] == study.quality["launch"].kid.value == metrics["kts"]["launch"]["kid"]
    assert metrics["kts"]["FM"]["kid_ci95"] == [0.0, 1.0] and "kid_real_floor" in metrics
    assert list(study.table.columns[:3]) == ["FID", "KID", "KID 95% CI"]
    protocol = kts_mod.chapter_protocol("cifar", backend, groups, main, sweep, study, guidance=1.5, n_steps=3,
                                        n_samples=12, sweep_scales=(1.0, 1.5), seed=0, alpha0=0.05, beta0=0.05,
                                        tau_split=0.6, paper_path_exercised=False, train_seconds={})
    assert protocol["network_evals_per_sample"] == 6 and protocol["sweep_scales"] == [1.0, 1.5]
    assert protocol["n_samples"] == 12 and "paired bootstrap" in protocol["row_tests"]["kts"]


def test_readings_follow_the_numbers():
    table = analysis.pd.DataFrame({"mean KPE": [1.0, 3.0, 2.0, 0.5]}, index=["a", "b", "c", "d"])
    between = kts_mod.group_reading(_comparison(1.0, 2.0, 0.01), _comparison(1.0, 1.1, 0.5), table, 0.8)
    assert "*between* classes" in between and "(b, c, a)" in between and "+0.80" in between
    within = kts_mod.group_reading(_comparison(1.0, 2.0, 0.01), _comparison(1.0, 2.0, 0.01), table, 0.8)
    assert within.startswith("Within classes the high-KPE samples score higher")
    assert kts_mod.group_reading(_comparison(2.0, 1.0, 0.5), _comparison(1.0, 1.1, 0.5), table, None).startswith(
        "Neither cut")
    # the stratified p is the one read when given, and a significant lower high-KPE mean reads as reversed
    assert kts_mod.group_reading(_comparison(1.0, 2.0, 0.01), _comparison(1.0, 2.0, 0.01), table, 0.8,
                                 within_p=0.3).startswith("In this run the difference comes from *between*")
    reversed_ = kts_mod.group_reading(_comparison(2.0, 1.0, 0.01), _comparison(2.0, 1.0, 0.01), table, 0.8)
    assert "*lower*" in reversed_ and "reverse of the paper" in reversed_
    assert kts_mod.guidance_reading({"KPE": 1.0, "score": 0.9, "margin": 0.6}).startswith("Stronger guidance")
    assert kts_mod.guidance_reading({"KPE": 1.0, "score": 0.9, "margin": 0.5}).startswith("In this run")


def test_figures_draw_from_results(tiny_chapter):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kpe_lib.experiments.semantics_guidance import figures

    backend, main, sweep = tiny_chapter
    study = analysis.group_study(main.kpe, main.sem, main.correct, main.labels, "thirds", score_name="s",
                                 margin_name="m", n_boot=20)
    fig = figures.extremes_figure(main, study, backend, per_class=6)
    assert len(fig.axes) == 2 and fig.axes[0].get_title().startswith("low KPE")
    fig2 = figures.sweep_grid_figure(sweep, backend.class_names, side=8)
    assert [t.get_text() for t in fig2.axes[0].texts][-2:] == ["w = 1", "w = 1.5"]
    plt.close("all")


# --- the tests behind the scoreboard rows ----------------------------------------------------------------

import scipy.stats

from kpe_lib.experiments.semantics_guidance import row_tests
from kpe_lib.metrics import compare_groups, kpe_groups


def test_welch_interval_matches_the_t_interval_by_hand():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 6), rng.normal(0, 1, 6), rng.normal(1, 3, 6)])
    c = compare_groups(values, kpe_groups(np.arange(18.0)))
    a, b = values[:6], values[12:]
    se = np.sqrt(a.var(ddof=1) / 6 + b.var(ddof=1) / 6)
    half = scipy.stats.t.ppf(0.975, c.welch_dof) * se
    assert row_tests.welch_interval(c) == pytest.approx([b.mean() - a.mean() - half, b.mean() - a.mean() + half])
    # a Welch interval excludes 0 exactly when Welch's p < 0.05
    lo, hi = row_tests.welch_interval(c)
    assert (lo > 0 or hi < 0) == (c.welch_p < 0.05)
    flat = compare_groups(np.ones(6), kpe_groups(np.arange(6.0)))
    assert row_tests.welch_interval(flat) == [0.0, 0.0]


def test_semantics_tests_read_the_within_class_and_global_comparisons():
    kpe = torch.arange(12.0, dtype=torch.float64)
    labels = torch.arange(12) % 2
    sem = SemanticResult(score=kpe * 2.0 + torch.sin(kpe), margin=-kpe + torch.cos(kpe), backend="test")
    study = analysis.group_study(kpe, sem, None, labels, "thirds", score_name="s", margin_name="m", n_boot=20)
    out = row_tests.semantics_tests(study.comparisons, "s", "m")
    assert list(out) == ["score_within", "margin_within", "score_pooled", "margin_pooled"]
    within, pooled = study.comparisons[("within class", "m")], study.comparisons[("global", "s")]
    assert out["margin_within"]["p"] == within.welch_p and out["margin_within"]["cut"] == "within class"
    assert out["score_pooled"]["p"] == pooled.welch_p and out["score_pooled"]["mann_whitney_p"] == pooled.mw_p
    assert out["score_pooled"]["n"] == 8 and out["score_within"]["test"] == row_tests.WELCH_WITHIN
    assert study.within("margin") is within
    strat = row_tests.semantics_tests(study.comparisons, "s", "m", study.stratified)
    assert strat["margin_within"]["test"] == row_tests.STRATIFIED_WITHIN
    assert strat["margin_within"]["p"] == study.stratified["m"].p
    assert strat["margin_within"]["welch_p"] == within.welch_p
    assert strat["score_pooled"] == out["score_pooled"]
    # within each class the score rises with KPE and the margin falls: the stratified differences say so
    assert study.stratified["s"].diff > 0 > study.stratified["m"].diff and study.stratified["s"].n_strata == 2


def test_paired_mean_change_by_hand_and_at_the_edges():
    a = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    b = a + np.array([0.5, 0.2, 0.9, 0.4, 0.6])
    r = row_tests.paired_mean_change(a, b, n_boot=200, seed=1)
    assert r["p"] == pytest.approx(scipy.stats.ttest_rel(b, a).pvalue) and r["n"] == 5
    assert r["change"] == pytest.approx(0.52) and r["ci95"][0] <= 0.52 <= r["ci95"][1]
    assert r["wilcoxon_p"] == pytest.approx(scipy.stats.wilcoxon(b - a).pvalue)
    same = row_tests.paired_mean_change(a, a, n_boot=20)
    assert (same["p"], same["ci95"], same["wilcoxon_p"]) == (1.0, [0.0, 0.0], 1.0)
    assert row_tests.paired_mean_change(a, a + 1.0, n_boot=20)["p"] == 0.0
    with pytest.raises(ValueError, match="paired"):
        row_tests.paired_mean_change(a, a[:3])


def test_kts_tests_are_paired_on_the_shared_noise():
    from kpe_lib.metrics import (FrechetReference, feature_statistics, paired_kid_change, paired_set_change,
                                 precision_recall)
    from kpe_lib.metrics.quality import ReferenceSet

    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 5, generator=g)
    fm = torch.randn(20, 5, generator=g)
    quality = {"FM": types.SimpleNamespace(features=fm), "launch": types.SimpleNamespace(features=fm * 0.9),
               "landing": types.SimpleNamespace(features=fm + 0.3),
               "landing (linear)": types.SimpleNamespace(features=fm + 0.1)}
    score = torch.randn(20, generator=g, dtype=torch.float64)
    runs = {"FM": {"score": score}, "launch": {"score": score + 0.1}, "landing": {"score": score - 0.2},
            "landing (linear)": {"score": score}}
    reference = ReferenceSet(features=real, stats=feature_statistics(real))
    out = row_tests.kts_tests(runs, quality, reference, seed=3, n_boot_fid=30, n_boot_kid=40, n_boot_recall=20,
                              n_boot_mean=50)
    assert list(out) == [f"{q}_{k}" for k in ("launch", "landing", "landing_linear")
                         for q in ("fid", "kid", "score", "recall")]
    assert out["score_landing"]["change"] == pytest.approx(-0.2) and out["score_landing_linear"]["change"] == 0
    fid = FrechetReference.from_stats(reference.stats).paired_change(fm, fm * 0.9, n_boot=30, seed=3)
    assert out["fid_launch"]["p"] == fid.pvalue and out["fid_launch"]["ci95"] == list(fid.ci)
    kid = paired_kid_change(real, fm, fm + 0.3, n_boot=40, seed=3)
    assert out["kid_landing"]["change"] == kid.change and out["kid_landing"]["ci95"] == list(kid.ci)
    rec = paired_set_change(lambda r, f: precision_recall(r, f, k=3).recall, real, fm, fm + 0.3, n_boot=20, seed=3)
    assert out["recall_landing"]["ci95"] == list(rec.ci) and out["recall_landing"]["n"] == 20
    assert out["score_launch"]["change"] == pytest.approx(0.1) and out["score_launch"]["p"] < 1e-6


def test_every_row_of_the_chapter_is_judged_from_the_records(tiny_chapter):
    from kpe_lib.book.scoreboard import ROWS, chapter_table
    from kpe_lib.book.verdicts import evidence

    _, main, _ = tiny_chapter
    study = analysis.group_study(main.kpe, main.sem, None, main.labels, "thirds", score_name="s", margin_name="m",
                                 n_boot=20)
    records = row_tests.semantics_tests(study.comparisons, "s", "m")
    g = torch.Generator().manual_seed(1)
    for key in ("fid_launch", "kid_launch", "score_launch", "recall_landing"):
        records[key] = {"test": "paired bootstrap", "p": 0.5, "ci95": [-1.0, 1.0], "n": 8}
    metrics = {"tests": {k: evidence(**v) for k, v in records.items()},
               **{k: float(torch.rand(1, generator=g)) for r in ROWS if r.chapter == "05_semantics_guidance"
                  for k in r.ours}}
    table = chapter_table("05_semantics_guidance", metrics, {"n_samples": 12})
    assert len(table) == len([r for r in ROWS if r.chapter == "05_semantics_guidance"])
    assert not set(table["verdict"]) & {"untested", "not run"}


class ConstantClassField(nn.Module):
    """v(x, t, y) = e_y, a constant per class (index 2 is the null class): every energy is known by hand."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]], dtype=torch.float64)

    def forward(self, x, t, y=None):
        y = torch.full((x.shape[0],), 2) if y is None else y
        return self.e[y] + 0 * x


@pytest.mark.parametrize("w", [1.0, 3.0])
def test_energy_split_adds_up_to_the_kpe_by_hand(w):
    labels = torch.tensor([0, 1, 0, 1])
    run = sample_guided(ConstantClassField(), torch.zeros(4, 2, dtype=torch.float64), labels, scale=w, n_steps=5,
                        diagnostics=True)
    split = analysis.guidance_split(run)
    e = ConstantClassField().e
    g = (w - 1) * (e[labels] - e[2])
    assert torch.allclose(split.conditional, 0.5 * e[labels].pow(2).sum(1))
    assert torch.allclose(split.guidance, 0.5 * g.pow(2).sum(1))
    assert split.guidance_share == pytest.approx(float(0.5 * g.pow(2).sum(1).mean() / run.kpe.mean()))
    shares = split.table["share of KPE"]
    assert shares.iloc[0] == pytest.approx(1.0) and shares.iloc[1:].sum() == pytest.approx(1.0)
    assert (split.guidance_share == 0.0) == (w == 1.0)
    assert analysis.guidance_split(sample_guided(ConstantClassField(), torch.zeros(4, 2, dtype=torch.float64),
                                               labels, scale=w, n_steps=5)) is None
