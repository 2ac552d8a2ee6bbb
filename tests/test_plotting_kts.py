"""The KTS chapter's figures draw what they are given and refuse mismatched input (kpe_lib.plotting.kts)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kpe_lib.plotting.kts import (fmem_steps_plot, form_heatmap, neighbor_pairs, paired_bars,  # noqa: E402
                                  pareto_plot, place_labels)


def test_fmem_steps_plot_draws_points_and_loss():
    ax = fmem_steps_plot([100, 200, 300], [0.0, 10.0, 30.0], [(0, 0), (5, 15), (20, 40)],
                         losses=np.linspace(1, 0.1, 300))
    line = ax.get_lines()[0]
    assert np.allclose(line.get_ydata(), [0, 10, 30])
    assert len(ax.figure.axes) == 2  # the twin loss axis
    with pytest.raises(ValueError, match="one entry per checkpoint"):
        fmem_steps_plot([1, 2], [1.0], [(0, 2)])
    plt.close("all")


def test_pareto_plot_joins_the_front_in_fid_order():
    ax = pareto_plot([3.0, 1.0, 2.0], [1.0, 3.0, 2.0], ["a", "b", "c"], ["g", "g", "h"], front=[True, True, True])
    front_line = [ln for ln in ax.get_lines() if ln.get_label() == "Pareto front"][0]
    assert front_line.get_xdata().tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError):
        pareto_plot([1.0], [1.0, 2.0], ["a"], ["g"])
    plt.close("all")


def test_labels_of_nearby_points_do_not_overlap():
    # the chapter's worst case: two configurations at almost the same place, plus a long label beside them
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    x = np.array([240.6, 248.7, 259.9, 316.9, 315.8, 322.5, 349.6, np.nan])
    y = np.array([21.9, 21.9, 18.8, 6.25, 6.25, 0.0, 0.0, 3.0])
    labels = ["launch only", "FM", "tau=0.8", "landing only", "tau=0.2", "EA b=0.05 q=0.5 continuous",
              "landing 0.05", "missing"]
    ax.plot(x, y, "o")
    notes = place_labels(ax, x, y, labels)
    assert notes[-1] is None and all(n is not None for n in notes[:-1])
    fig.canvas.draw()
    boxes = [n.get_window_extent() for n in notes[:-1]]
    overlaps = [(labels[i], labels[j]) for i in range(len(boxes)) for j in range(i)
                if boxes[i].overlaps(boxes[j])]
    assert not overlaps, overlaps
    plt.close("all")


def test_heatmap_bars_and_neighbor_pairs():
    ax = form_heatmap(np.arange(9.0).reshape(3, 3), ["l", "c", "e"], ["e", "l", "c"])
    assert [t.get_text() for t in ax.texts][:3] == ["0.0", "1.0", "2.0"]
    with pytest.raises(ValueError, match="shape"):
        form_heatmap(np.zeros((2, 3)), ["a", "b", "c"], ["x", "y", "z"])
    ax = paired_bars(["c1", "c2"], {"FM": [30.0, 20.0], "KTS": [25.0, 15.0]}, errors={"FM": [1.0, 1.0]})
    assert [round(p.get_height(), 6) for p in ax.patches] == [30.0, 20.0, 25.0, 15.0]
    s = np.random.default_rng(0).random((4, 1, 8, 8))
    ax = neighbor_pairs(s, s[::-1], [True, False, True, False])
    assert len(ax.patches) == 2  # one red frame per memorised sample
    with pytest.raises(ValueError):
        neighbor_pairs(s, s[:2], [True, False])
    plt.close("all")


def test_form_heatmap_marks_cells_not_run_and_keeps_text_readable():
    ax = form_heatmap(np.array([[0.0, np.nan], [-8.0, 8.0]]), ["a", "b"], ["x", "y"], min_span=1.0)
    texts = {t.get_text(): t.get_color() for t in ax.texts}
    assert texts["not run"] == "black" and texts["0.0"] == "black"
    assert texts["-8.0"] == texts["8.0"] == "white"  # the saturated ends of the diverging map
    plt.close(ax.figure)
