"""The page "Bring your own model" (notebooks/06_bring_your_own_model.md): every code cell, in one namespace, at
tiny parameters (the book runner executes it at the smoke scale; this checks its logic in seconds)."""
import matplotlib
import pytest

pytest.importorskip("torchcfm")
pytest.importorskip("diffusers")

import jupytext  # noqa: E402
import torch  # noqa: E402

from kpe_lib.book.results import read_results  # noqa: E402
from kpe_lib.book.scales import project_root  # noqa: E402

TINY = dict(scale="smoke", byom_train_steps=150, byom_batch_size=64, byom_n_samples=200, byom_n_steps=20,
            byom_sd3_steps=4, byom_guidance_scale=5.0)


@pytest.mark.slow
def test_every_cell_runs_and_writes_its_results(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    root = project_root()
    monkeypatch.chdir(root)
    cells = [c for c in jupytext.read(root / "notebooks" / "06_bring_your_own_model.md").cells
             if c.cell_type == "code"]
    assert "parameters" in cells[0].metadata.get("tags", [])
    namespace = {"__name__": "__page__"}
    exec(compile(cells[0].source, "parameters", "exec"), namespace)
    namespace.update(TINY, results_dir=str(tmp_path))
    threads = torch.get_num_threads()
    try:
        for i, cell in enumerate(cells[1:], 1):
            exec(compile(cell.source, f"cell {i}", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)  # open_chapter sets the chapters' thread count
    metrics = read_results(tmp_path / "smoke" / "06_bring_your_own_model.json").metrics
    assert metrics["torchdiffeq_max_abs_diff"] < 1e-4 and metrics["diffusers_max_abs_diff"] < 1e-5
    assert metrics["OT-CFM_kpe_over_bound"] < metrics["I-CFM_kpe_over_bound"]
    assert 0 < metrics["diffusers_guidance_share_mean"] and metrics["diffusers_kts_kpe_ratio"] < 1
    import matplotlib.pyplot as plt
    plt.close("all")
