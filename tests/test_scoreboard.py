"""The scoreboard reads results files, judges each paper row, and renders every row at every scale."""
import json

import pytest

from kpe_lib.book.pages import api_markdown, parameters_markdown, scoreboard_markdown, write_generated_pages
from kpe_lib.book.scoreboard import ROWS, Row, lookup, scoreboard


def write(tmp_path, scale, chapter, metrics):
    folder = tmp_path / "results" / scale
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{chapter}.json").write_text(json.dumps(
        {"chapter": chapter, "scale": scale, "metrics": metrics, "protocol": {}}))


def test_lookup_handles_dotted_keys():
    m = {"a": 1, "tau_sweep": {"0.6": {"fid": 14.0}}, "x.y": 2}
    assert lookup(m, "a") == 1 and lookup(m, "x.y") == 2 and lookup(m, "tau_sweep.0.6.fid") == 14.0
    assert lookup(m, "tau_sweep.0.2.fid") is None and lookup(m, "missing") is None


@pytest.mark.parametrize("vals,expected", [
    ([0.37, 0.31], "reproduced in magnitude"),   # change -6 points vs the paper's -6.12 (tolerance 3)
    ([0.37, 0.20], "reproduced in direction"),
    ([0.30, 0.35], "not reproduced"),
    (None, "not run"),
])
def test_two_value_verdicts(vals, expected):
    row = Row("e", "F_mem", "37.34 -> 31.22", "04", ("a", "b"), "decrease", -6.12, 3.0, 100.0)
    metrics = {} if vals is None else {"a": vals[0], "b": vals[1]}
    assert row.verdict(row.values(metrics)) == expected


def test_single_value_verdicts():
    row = Row("e", "rho", "-0.65", "03", ("rho",), "below", -0.65, 0.1)
    assert row.verdict([-0.6]) == "reproduced in magnitude"
    assert row.verdict([-0.2]) == "reproduced in direction"
    assert row.verdict([0.1]) == "not reproduced"


def test_every_paper_row_is_present_at_every_scale(tmp_path):
    write(tmp_path, "cpu", "04_celeba_kts", {"fmem_fm": 0.37, "fmem_kts": 0.25, "fid_fm": 40.0, "fid_kts": 41.0,
                                             "tau_sweep": {"0.6": {"fid": 15.0}}})
    write(tmp_path, "cpu", "03_cifar_support", {"spearman_knn": {"pixels": -0.2, "vae": -0.6}})
    entries = scoreboard(tmp_path / "results", ("cpu", "paper"))
    assert len(entries) == 2 * len(ROWS)
    by = {(e.scale, e.row.metric): e for e in entries}
    assert by[("cpu", "F_mem (%), FM -> KTS a0 = b0 = 0.01")].verdict == "reproduced in direction"
    assert by[("cpu", "F_mem (%), FM -> KTS a0 = b0 = 0.01")].value == "37 -> 25"
    assert by[("cpu", "FID, FM -> KTS a0 = b0 = 0.01")].verdict == "not reproduced"
    assert by[("cpu", "FID at tau_split = 0.6")].verdict == "reproduced in magnitude"
    assert by[("cpu", "Spearman(KPE, kNN support), strongest space")].value == "-0.6"
    assert all(e.verdict == "not run" for e in entries if e.scale == "paper")
    page = scoreboard_markdown(tmp_path / "results")
    assert all(row.paper.replace("|", "\\|") in page for row in ROWS)
    assert "## Scale `cpu`" in page and "## Scale `paper`" in page


def test_generated_pages_are_written(tmp_path):
    (tmp_path / "notebooks" / "params").mkdir(parents=True)
    for scale, steps in (("smoke", 10), ("cpu", 100), ("paper", 1000)):
        (tmp_path / "notebooks" / "params" / f"{scale}.yml").write_text(f"scale: {scale}\ntoy_steps: {steps}\n")
    assert "| `toy_steps` | `10` | `100` | `1000` |" in parameters_markdown(tmp_path)
    paths = write_generated_pages(tmp_path, tmp_path / "book")
    assert [p.name for p in paths] == ["scoreboard.md", "parameters.md", "api.md"]
    assert sorted(p.name for p in (tmp_path / "book" / "generated").iterdir()) == \
        ["api.md", "parameters.md", "scoreboard.md"]  # no temporary file left


def test_api_page_documents_the_public_names():
    page = api_markdown(("kpe_lib",))
    for name in ("time_grid", "KTS", "sample", "SampleResult", "EmpiricalVelocity"):
        assert f"### `{name}`" in page
    assert "Mathematics §2" in page


def test_evidence_demotes_a_direction_that_is_not_significant():
    row = Row("e", "F_mem", "37.34 -> 31.22", "04", ("a", "b"), "decrease", -6.12, 3.0, 100.0, evidence="ci")
    held = {"a": 0.37, "b": 0.20}
    assert row.verdict(row.values(held), row.significant(held | {"ci": [-0.25, -0.08]})) == "reproduced in direction"
    shaky = held | {"ci": [-0.30, 0.01]}
    assert row.significant(shaky) is False
    assert row.verdict(row.values(shaky), False) == "direction only, not significant"
    assert row.evidence_text(shaky) == "95% CI [-30, 1]"
    assert row.significant(held) is None and row.evidence_text(held) == "-"  # no evidence reported
    p_row = Row("e", "score", "21.87 -> 24.62", "05", ("lo", "hi"), "increase", evidence="p")
    m = {"lo": 1.0, "hi": 2.0, "p": 0.053}
    assert row.significant(m) is None and p_row.significant(m) is False and p_row.evidence_text(m) == "p = 0.053"
    assert p_row.verdict(p_row.values(m), p_row.significant(m)) == "direction only, not significant"
    assert p_row.verdict(p_row.values(m | {"p": 0.01}), True) == "reproduced in direction"
    # a paper change within tolerance of 0 ("about no change") is judged by magnitude alone
    null = Row("e", "F_mem", "37.34 -> 36.78", "04", ("a", "b"), "decrease", -0.56, 3.0, 100.0, evidence="ci")
    near = {"a": 0.37, "b": 0.36, "ci": [-0.05, 0.03]}
    assert null.verdict(null.values(near), null.significant(near)) == "reproduced in magnitude"
    assert null.verdict(null.values({"a": 0.37, "b": 0.385})) == "reproduced in magnitude"  # +1.5: sign irrelevant
    assert null.verdict(null.values({"a": 0.37, "b": 0.42})) == "not reproduced"           # +5 points
    auroc = Row("e", "AUROC", "claim", "02", ("auc",), "above", threshold=0.5, evidence="auc_ci")
    assert auroc.significant({"auc": 0.6, "auc_ci": [0.45, 0.7]}) is False
    assert auroc.significant({"auc": 0.6, "auc_ci": [0.55, 0.7]}) is True


def test_spearman_rows_read_the_strongest_space_and_its_interval():
    row = next(r for r in ROWS if r.metric.startswith("Spearman(KPE, kNN"))
    m = {"spearman_knn": {"pixels": -0.2, "vae": -0.6}, "spearman_knn_ci": {"pixels": [-0.3, -0.1], "vae": [-0.7, 0.1]}}
    assert row.values(m) == [-0.6] and row.evidence_text(m) == "95% CI [-0.7, 0.1]"
    assert row.significant(m) is False and row.verdict(row.values(m), False) == "direction only, not significant"
    m["spearman_knn_ci"]["vae"] = [-0.7, -0.5]
    assert row.significant(m) is True and row.verdict(row.values(m), True) == "reproduced in magnitude"
    assert row.values({"spearman_knn": -0.3}) == [-0.3] and row.significant({"spearman_knn": -0.3}) is None


def test_change_verdict_is_the_rule_rows_and_chapters_share():
    from kpe_lib.book.scoreboard import change_verdict

    assert change_verdict(-6.0, -6.12, 3.0) == "reproduced in magnitude"
    assert change_verdict(-15.0, -6.12, 3.0) == "reproduced in direction"
    assert change_verdict(-15.0, -6.12, 3.0, significant=False) == "direction only, not significant"
    assert change_verdict(2.0, -6.12, 3.0) == "not reproduced" and change_verdict(0.0, -6.12, 3.0) == "not reproduced"
    assert change_verdict(1.6, -0.56, 0.28, null_tolerance=3.0, significant=False) == "reproduced in magnitude"
    assert change_verdict(4.0, -0.56, 0.28, null_tolerance=3.0) == "not reproduced"
    row = Row("e", "F_mem", "", "04", ("a", "b"), "decrease", -6.12, 3.0, 100.0)
    assert row.verdict([37.0, 22.0], False) == change_verdict(-15.0, -6.12, 3.0, null_tolerance=3.0, significant=False)
    with pytest.raises(ValueError, match="direction must be 'decrease' or 'increase'"):
        Row("e", "m", "", "04", ("a", "b"))
    with pytest.raises(ValueError, match="contradicts direction"):
        Row("e", "m", "", "04", ("a", "b"), "increase", -1.0, 0.5)
