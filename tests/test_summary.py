"""The introduction's summary is generated from the results and agrees with the scoreboard."""
from __future__ import annotations

import json
from pathlib import Path

from kpe_lib.book.scoreboard import ROWS, scoreboard
from kpe_lib.book.summary import CLAIMS, REPRODUCED, claim_status, summary_figure, summary_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_every_primary_row_belongs_to_one_claim_at_most():
    for row in ROWS:
        if row.role == "primary":
            owners = [c.key for c in CLAIMS if c.rows(row)]
            assert len(owners) <= 1, (row.metric, owners)
    assert all(any(c.rows(r) for r in ROWS) for c in CLAIMS)  # no claim without rows


def test_claim_counts_are_the_scoreboards_verdicts():
    entries = [e for e in scoreboard(ROOT / "results", ("cpu",)) if e.verdict != "not run"]
    for status in claim_status(ROOT / "results", ("cpu",)):
        mine = [e for e in entries if e.row.role == "primary" and status.claim.rows(e.row)]
        assert [e.verdict for e in status.entries] == [e.verdict for e in mine]
        assert status.reproduced == sum(e.verdict in REPRODUCED for e in mine)


def test_summary_reads_the_results_it_is_given(tmp_path):
    """Change one result: the summary's verdict for that claim changes with it (nothing is typed in)."""
    src = ROOT / "results" / "cpu" / "03_cifar_support.json"
    (tmp_path / "cpu").mkdir()
    record = json.loads(src.read_text())
    (tmp_path / "cpu" / src.name).write_text(json.dumps(record))
    before = summary_markdown(tmp_path)
    assert "**Higher-energy samples lie in sparser regions" in before and "Not run yet at the `gpu`" in before
    status = next(s for s in claim_status(tmp_path, ("cpu",)) if s.claim.key == "sparsity")
    assert status.entries and f"{status.reproduced} of {len(status.entries)} rows reproduced" in before
    semantics = next(s for s in claim_status(tmp_path, ("cpu",)) if s.claim.key == "semantics")
    assert semantics.verdict_text() == "not run"  # chapter 5's results are not in this folder
    # flip the sign of every correlation of the primary space: the claim now reads "not reproduced"
    for estimator in ("knn", "kde"):
        record["metrics"][f"spearman_{estimator}"]["vae"] *= -1
    tests = record["metrics"].get("tests", {})
    for name, test in tests.items():
        if name.startswith("spearman_") and name.endswith(".vae"):
            for key in ("estimate", "ci_low", "ci_high"):
                if isinstance(test.get(key), (int, float)):
                    test[key] *= -1
            if "ci_low" in test and "ci_high" in test:
                test["ci_low"], test["ci_high"] = test["ci_high"], test["ci_low"]
    (tmp_path / "cpu" / src.name).write_text(json.dumps(record))
    after = next(s for s in claim_status(tmp_path, ("cpu",)) if s.claim.key == "sparsity")
    assert after.reproduced == 0 and after.counts["not reproduced"] == len(after.entries)
    assert summary_markdown(tmp_path) != before


def test_summary_figure_is_written_atomically(tmp_path):
    path = summary_figure(ROOT / "results", tmp_path / "summary.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["summary.png"]
