"""kpe_lib.plotting.efm draws what it is given and rejects bad shapes."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kpe_lib.plotting.efm import image_rows, median_band  # noqa: E402


def test_median_band_draws_the_median_and_the_band():
    t = torch.linspace(0, 1, 5)
    v = torch.arange(5.0)[:, None] + torch.linspace(-1, 1, 11)[None]  # median = row index
    ax = median_band(t, v, label="speed")
    assert np.allclose(ax.lines[0].get_ydata(), np.arange(5.0), atol=1e-6)
    assert len(ax.collections) == 1
    plt.close("all")


def test_median_band_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        median_band(torch.zeros(3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="band"):
        median_band(torch.zeros(3), torch.zeros(3, 2), band=(0.9, 0.1))
    plt.close("all")


def test_image_rows_one_axes_per_row():
    fig = image_rows({"a": torch.rand(4, 1, 8, 8), "b": torch.rand(4, 1, 8, 8)})
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["a", "b"]
    with pytest.raises(ValueError, match="rows"):
        image_rows({})
    plt.close("all")
