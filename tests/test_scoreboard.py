"""The scoreboard reads results files, judges each paper row, and renders every row at every scale."""
import json

import pytest

from kpe_lib.book.pages import api_markdown, parameters_markdown, scoreboard_markdown, write_generated_pages
from kpe_lib.book.scoreboard import ROWS, chapter_table, judge_rows, replicate_names, scoreboard
from kpe_lib.book.verdicts import VERDICTS, Row, evidence, lookup


def write(tmp_path, scale, chapter, metrics, protocol=None, replicate=None):
    folder = tmp_path / "results" / (replicate or "") / scale
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{chapter}.json").write_text(json.dumps(
        {"chapter": chapter, "scale": scale, "metrics": metrics, "protocol": protocol or {}}))


def fmem_row(**kw):
    return Row("CelebA", "F_mem (%)", "37.34 -> 31.22", "04", ("fm", "kts"), "decrease", -6.12, 3.0, 100.0,
               test="fmem", **kw)


def judged(row, metrics, protocol=None):
    return row.judge(metrics, protocol).verdict


def test_lookup_handles_dotted_keys():
    m = {"a": 1, "tau_sweep": {"0.6": {"fid": 14.0}}, "x.y": 2}
    assert lookup(m, "a") == 1 and lookup(m, "x.y") == 2 and lookup(m, "tau_sweep.0.6.fid") == 14.0
    assert lookup(m, "tau_sweep.0.2.fid") is None and lookup(m, "missing") is None


def test_a_significant_change_in_the_paper_direction_is_reproduced():
    m = {"fm": 0.37, "kts": 0.31, "tests": {"fmem": evidence("exact McNemar", p=0.004, ci95=[-0.1, -0.02])}}
    assert judged(fmem_row(), m) == "reproduced in magnitude"          # -6 points, within 3 of -6.12
    m["kts"] = 0.20                                                    # -17 points: beyond the tolerance
    assert judged(fmem_row(), m) == "reproduced in direction"
    assert "exact McNemar p = 0.004" in fmem_row().judge(m).evidence


def test_a_bootstrap_p_of_zero_is_printed_as_a_bound():
    m = {"fm": 0.37, "kts": 0.20, "tests": {"fmem": evidence("paired bootstrap", p=0.0, ci95=[-0.2, -0.1],
                                                              n_boot=1000)}}
    j = fmem_row().judge(m)
    assert j.verdict == "reproduced in direction" and "paired bootstrap p < 0.001," in j.evidence
    del m["tests"]["fmem"]["n_boot"]
    assert "p = 0," not in fmem_row().judge(m).evidence


def test_a_change_that_is_not_significant_is_not_established_whatever_its_sign():
    for kts in (0.33, 0.40):    # a held and an opposite direction, both with p = 0.3
        m = {"fm": 0.37, "kts": kts, "tests": {"fmem": evidence("exact McNemar", p=0.3, ci95=[-0.05, 0.02])}}
        assert judged(fmem_row(), m) == "not established"


def test_a_significant_change_against_the_paper_is_not_reproduced():
    m = {"fm": 0.30, "kts": 0.45, "tests": {"fmem": evidence("exact McNemar", p=0.001, ci95=[0.06, 0.24])}}
    assert judged(fmem_row(), m) == "not reproduced"


def test_a_paper_change_below_the_run_resolution():
    # the paper's launch-only change (-0.56 points) against a run whose interval is +-8 points wide
    row = Row("CelebA", "F_mem (%)", "37.34 -> 36.78", "04", ("fm", "la"), "decrease", -0.56, 3.0, 100.0, test="t")
    m = {"fm": 0.234, "la": 0.297, "tests": {"t": evidence("exact McNemar", p=0.2, ci95=[-0.02, 0.14])}}
    j = row.judge(m)
    assert j.verdict == "below resolution" and j.resolution == pytest.approx(8.0)
    # the same effect with a run that resolves it
    m["tests"]["t"] = evidence("exact McNemar", p=0.4, ci95=[-0.004, 0.002])
    assert row.judge(m).verdict == "not established"      # resolution 0.3 points: it could have seen -0.56
    m["tests"]["t"] = evidence("exact McNemar", p=0.001, ci95=[0.04, 0.09])
    assert row.judge(m).verdict == "not reproduced"       # significant against the paper: resolved after all


def test_a_row_without_a_test_is_untested():
    assert judged(fmem_row(), {"fm": 0.37, "kts": 0.31}) == "untested"
    assert judged(fmem_row(), {"fm": 0.37, "kts": 0.31, "tests": {"other": evidence("x", p=0.01)}}) == "untested"
    assert judged(fmem_row(), {"fm": 0.37}) == "not run"


def test_fid_magnitudes_are_compared_only_at_the_paper_protocol():
    from kpe_lib.book.scoreboard import CELEBA_FID

    row = Row("CelebA", "FID", "16.68 -> 14.35", "04", ("a", "b"), "decrease", -2.33, 2.0, test="fid",
              comparable=CELEBA_FID)
    m = {"a": 16.0, "b": 13.8, "tests": {"fid": evidence("paired bootstrap", p=0.001, ci95=[-2.5, -1.9])}}
    assert judged(row, m, {"sampling": {"n_samples": 64}}) == "reproduced in direction"     # cross-protocol
    assert judged(row, m, {"sampling": {"n_samples": 10_000}}) == "reproduced in magnitude"  # the paper's count
    assert judged(row, m, {"sampling": {"n_samples": 30_000}}) == "reproduced in direction"  # more than 2x off
    j = row.judge(m, {"sampling": {"n_samples": 64}})
    assert j.relative == pytest.approx(-2.2 / 16.0)


def test_a_multi_space_claim_is_decided_by_its_primary_space_alone():
    rows = [r for r in ROWS if r.chapter == "03_cifar_support" and r.ours[0].startswith("spearman_knn")]
    primary = [r for r in rows if r.role == "primary"]
    assert len(primary) == 1 and primary[0].ours == ("spearman_knn.vae",)
    # the best space (pixels) is strongly negative, the primary one (vae) is not significant
    m = {"spearman_knn": {"pixels": -0.6, "vae": -0.05},
         "tests": {"spearman_knn": {"pixels": evidence("bootstrap CI", ci95=[-0.7, -0.5]),
                                    "vae": evidence("bootstrap CI", ci95=[-0.2, 0.1])}}}
    verdicts = {r.ours[0]: j.verdict for r, j in zip(rows, judge_rows(rows, {"03_cifar_support": (m, {})}))}
    assert verdicts["spearman_knn.vae"] == "not established"
    assert verdicts["spearman_knn.pixels"] == "reproduced in magnitude"   # a robustness row, not the verdict
    table = chapter_table("03_cifar_support", m, role="primary")
    assert list(table["verdict"]) == ["not established", "not run"]      # kNN vae, KDE vae (no KDE values)
    assert "median over 2 spaces" in table["this run"].iloc[0]


def test_semantics_within_class_null_with_a_pooled_effect():
    m = {"score_low_within_class": -1.324, "score_high_within_class": -1.330,
         "margin_low_within_class": -0.1, "margin_high_within_class": -0.05,
         "score_low": -1.49, "score_high": -1.195, "margin_low": -0.22, "margin_high": 0.30,
         "tests": {"score_within": evidence("Welch t, within class", p=0.96),
                   "margin_within": evidence("Welch t, within class", p=0.7),
                   "score_pooled": evidence("Welch t", p=0.004), "margin_pooled": evidence("Welch t", p=0.01)}}
    rows = [r for r in ROWS if r.claim in ("semantics within class", "semantics pooled")]
    out = {r.metric: (r.role, j.verdict) for r, j in zip(rows, judge_rows(rows, {"05_semantics_guidance": (m, {})}))}
    within = [v for role, v in out.values() if role == "primary"]
    pooled = [v for role, v in out.values() if role == "robustness"]
    assert within == ["not established", "not established"]       # the primary evidence
    assert pooled == ["reproduced in direction", "reproduced in direction"]


def test_holm_correction_over_the_outcomes_of_one_claim():
    a = Row("e", "score", "1 -> 2", "05", ("a0", "a1"), "increase", test="ta", claim="c")
    b = Row("e", "margin", "1 -> 2", "05", ("b0", "b1"), "increase", test="tb", claim="c")
    m = {"a0": 1.0, "a1": 2.0, "b0": 1.0, "b1": 2.0,
         "tests": {"ta": evidence("Welch t", p=0.03), "tb": evidence("Welch t", p=0.04)}}
    joint = judge_rows([a, b], {"05": (m, {})})
    assert [j.verdict for j in joint] == ["not established", "not established"]   # Holm: 0.06 and 0.06
    assert [j.pvalue for j in joint] == pytest.approx([0.06, 0.06])
    alone = judge_rows([a], {"05": (m, {})})                                        # one outcome: p = 0.03
    assert alone[0].verdict == "reproduced in direction"


def test_single_value_claims_need_their_interval_on_one_side():
    row = Row("e", "AUROC", "claim", "02", ("auc",), "above", threshold=0.5, test="auc")
    assert judged(row, {"auc": 0.6, "tests": {"auc": evidence("bootstrap CI", ci95=[0.45, 0.7])}}) == "not established"
    assert judged(row, {"auc": 0.6, "tests": {"auc": evidence("bootstrap CI", ci95=[0.55, 0.7])}}) \
        == "reproduced in direction"
    assert judged(row, {"auc": 0.3, "tests": {"auc": evidence("bootstrap CI", ci95=[0.2, 0.4])}}) == "not reproduced"


def test_rows_validate_their_direction():
    with pytest.raises(ValueError, match="direction must be one of"):
        Row("e", "m", "", "04", ("a", "b"), "below")
    with pytest.raises(ValueError, match="contradicts"):
        Row("e", "m", "", "04", ("a", "b"), "increase", -1.0, 0.5)
    with pytest.raises(ValueError, match="ci95"):
        evidence("x", ci95=[1.0, 0.0])
    with pytest.raises(ValueError, match="p must be"):
        evidence("x", p=1.5)


def test_every_row_is_on_the_page_at_every_scale_and_a_flip_on_rebuild_is_not_established(tmp_path):
    good = {"fmem_fm": 0.40, "fmem_kts": 0.25,
            "tests": {"fmem": {"balanced": evidence("exact McNemar", p=0.001, ci95=[-0.2, -0.1])}}}
    write(tmp_path, "cpu", "04_celeba_kts", good, {"data": {"n_train": 16}})
    entries = scoreboard(tmp_path / "results", ("cpu", "paper"))
    assert len(entries) == 2 * len(ROWS)
    by = {(e.scale, e.row.metric): e for e in entries}
    key = ("cpu", "F_mem (%), FM -> KTS a0 = b0 = 0.01")
    assert by[key].verdict == "reproduced in direction" and by[key].value == "40 -> 25 (-38%)"
    assert all(e.verdict == "not run" for e in entries if e.scale == "paper")
    assert replicate_names(tmp_path / "results", "cpu") == []
    # a rebuild with another seed where the change is no longer significant
    shaky = {"fmem_fm": 0.40, "fmem_kts": 0.36,
             "tests": {"fmem": {"balanced": evidence("exact McNemar", p=0.4, ci95=[-0.12, 0.04])}}}
    write(tmp_path, "cpu", "04_celeba_kts", shaky, {"data": {"n_train": 16}}, replicate="seed1")
    assert replicate_names(tmp_path / "results", "cpu") == ["seed1"]
    entry = {(e.scale, e.row.metric): e for e in scoreboard(tmp_path / "results", ("cpu",))}[key]
    assert entry.flipped and entry.verdict == "not established" and "flips on rebuild" in entry.evidence
    page = scoreboard_markdown(tmp_path / "results")
    assert all(row.paper.replace("|", "\\|") in page for row in ROWS)
    assert "## Scale `cpu`" in page and "Rebuilt with another seed" in page and "seed1" in page
    # only one row has a result in the rebuild: it is compared, every other row says it was not rebuilt
    assert f"1 of {len(ROWS)} rows were rebuilt, 1 of them changed verdict" in page
    assert "| F_mem (%), FM -> KTS a0 = b0 = 0.01 | reproduced in direction | below resolution | no |" in page
    assert "| late-KPE AUROC for copies | not run | not rebuilt | not rebuilt |" in page
    assert set(VERDICTS) >= {e.verdict for e in entries}


def test_chapter_table_renders_the_rows_of_one_chapter():
    table = chapter_table("04_celeba_kts", {"fmem_fm": 0.4, "fmem_kts": 0.3})
    assert "F_mem (%), FM -> KTS a0 = b0 = 0.01" in table.index and set(table.columns) >= {"paper", "verdict"}
    with pytest.raises(ValueError, match="no scoreboard rows"):
        chapter_table("99_nothing", {})


def test_generated_pages_are_written(tmp_path):
    (tmp_path / "notebooks" / "params").mkdir(parents=True)
    for scale, steps in (("smoke", 10), ("cpu", 100), ("gpu", 300), ("paper", 1000)):
        (tmp_path / "notebooks" / "params" / f"{scale}.yml").write_text(f"scale: {scale}\ntoy_steps: {steps}\n")
    assert "| `toy_steps` | `10` | `100` | `300` | `1000` |" in parameters_markdown(tmp_path)
    paths = write_generated_pages(tmp_path, tmp_path / "book")
    assert [p.name for p in paths] == ["summary.png", "summary.md", "scoreboard.md", "parameters.md", "api.md"]
    assert sorted(p.name for p in (tmp_path / "book" / "generated").iterdir()) == \
        ["api.md", "parameters.md", "scoreboard.md", "summary.md", "summary.png"]  # no temporary file left


def test_api_page_documents_the_public_names():
    page = api_markdown(("kpe_lib",))
    for name in ("time_grid", "KTS", "sample", "SampleResult", "EmpiricalVelocity"):
        assert f"### `{name}`" in page
    assert "Mathematics §2" in page


