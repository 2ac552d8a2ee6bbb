"""Verdict rules: how one paper claim is judged from a chapter's results (Mathematics §5.7).

A :class:`Row` holds one paper number, where the chapter keeps ours, and the *test* behind the verdict (a
chapter stores each test's outcome under ``metrics["tests"][<key>]``, written by :func:`evidence`). Two
questions get two tolerances:

1. **Can this run resolve the paper's change at all?** The resolution of a run is the half-width of its 95%
   interval (of the change, or of the value against the claim's threshold). A paper effect smaller than that
   gets *below resolution*, with the resolution stated.
2. **Is our change within the paper's magnitude?** Asked only where the protocols match (``comparable``):
   an FID magnitude at 64 samples against the paper's 10,000 says nothing. Elsewhere the verdict is about
   direction, and the relative change is shown beside it.

The verdicts, decided in this order:

- ``not run``: no result (or key) for that scale;
- ``untested``: the chapter reports no test for the row;
- ``below resolution``: the test does not reject the null, and the paper's effect is smaller than this run's
  resolution: the run could not have seen it;
- ``not established``: the test does not reject the null at the 5% level (after Holm's correction over the
  outcomes of one claim), although the run could resolve an effect of the paper's size. The sign of a
  change that is not significant is noise: it flips when the book is rebuilt with another seed, so it earns
  no verdict of its own;
- ``not reproduced``: significant, in the direction opposite to the paper's;
- ``reproduced in magnitude``: significant in the paper's direction, protocols comparable, and within the
  row's ``tolerance`` of the paper's number;
- ``reproduced in direction``: significant in the paper's direction otherwise.

Example:
    >>> row = Row("CelebA", "F_mem (%)", "37.34 -> 31.22", "04", ("fm", "kts"), "decrease", -6.12, 3.0, 100.0,
    ...           test="fmem_kts")
    >>> metrics = {"fm": 0.40, "kts": 0.30, "tests": {"fmem_kts": {"test": "exact McNemar", "p": 0.003,
    ...                                                            "ci95": [-0.16, -0.04]}}}
    >>> row.judge(metrics).verdict
    'reproduced in direction'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

__all__ = ["VERDICTS", "ALPHA", "Row", "Judgement", "evidence", "lookup", "holm_adjust"]

ALPHA = 0.05
VERDICTS = ("reproduced in magnitude", "reproduced in direction", "not established", "below resolution",
            "not reproduced", "untested", "not run")

Metrics = Mapping[str, Any]


def lookup(metrics: Metrics, key: str) -> Any:
    """Value at a dotted key, e.g. ``"tau_sweep.0.6.fid"`` (keys may themselves contain dots); None if absent."""
    if key in metrics:
        return metrics[key]
    for i, char in enumerate(key):
        if char == "." and isinstance(metrics.get(key[:i]), dict):
            found = lookup(metrics[key[:i]], key[i + 1:])
            if found is not None:
                return found
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _p_text(p: float | None, record: Mapping[str, Any]) -> str:
    """`` p = 0.012`` as printed; a resampling p-value of 0 means no replicate crossed the null."""
    if p is None:
        return ""
    if p == 0.0:
        n_boot = record.get("n_boot")
        return f" p < {1 / n_boot:.2g}" if isinstance(n_boot, int) and n_boot > 0 else " p < 1/(resamples)"
    return f" p = {p:.2g}"


def evidence(test: str, *, p: float | None = None, ci95: Sequence[float] | None = None, n: int | None = None,
             **extra: Any) -> dict[str, Any]:
    """The record a chapter stores under ``metrics["tests"][key]`` for one test.

    Args:
        test: the test's name as the scoreboard prints it, e.g. ``"exact McNemar"``, ``"paired bootstrap"``.
        p: two-sided p-value, if the test gives one.
        ci95: 95% interval of the change (two-key rows) or of the value (one-key rows), in the units of the
            metrics (before a row's ``scale_factor``).
        n: sample count behind the test.
        **extra: anything else worth keeping (e.g. ``estimator="within-class"``).

    Example:
        >>> evidence("exact McNemar", p=0.12, ci95=[-0.1, 0.02], n=64)["test"]
        'exact McNemar'
    """
    if not isinstance(test, str) or not test:
        raise ValueError(f"test must name the test, got {test!r}")
    if p is not None and (_num(p) is None or not 0.0 <= p <= 1.0):
        raise ValueError(f"p must be a p-value in [0, 1] or None, got {p!r}")
    if ci95 is not None and (len(ci95) != 2 or any(_num(v) is None for v in ci95) or ci95[0] > ci95[1]):
        raise ValueError(f"ci95 must be [lo, hi] with lo <= hi, got {ci95!r}")
    record: dict[str, Any] = {"test": test, "p": None if p is None else float(p),
                              "ci95": None if ci95 is None else [float(ci95[0]), float(ci95[1])]}
    if n is not None:
        record["n"] = int(n)
    record.update(extra)
    return record


def holm_adjust(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values of one claim's outcomes (None stays None)."""
    from kpe_lib.metrics.significance import holm

    present = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted = holm([float(pvalues[i]) for i in present]) if present else []
    out: list[float | None] = [None] * len(pvalues)
    for i, a in zip(present, adjusted):
        out[i] = a
    return out


@dataclass(frozen=True)
class Judgement:
    """One row judged at one scale.

    Attributes:
        values: our value(s) in row units, or None.
        verdict: one of :data:`VERDICTS`.
        evidence: the test and its p-value / interval as printed, e.g. ``"exact McNemar p = 0.12"``.
        resolution: half-width of the 95% interval in row units (None without an interval).
        relative: the relative change ``(b - a) / |a|`` of a two-key row, shown where magnitudes are not compared.
        pvalue: the p-value used (Holm-adjusted when the claim has several outcomes), or None.
    """

    values: list[float] | None
    verdict: str
    evidence: str = "-"
    resolution: float | None = None
    relative: float | None = None
    pvalue: float | None = None


@dataclass(frozen=True)
class Row:
    """One paper number and the rule that judges ours.

    Attributes:
        experiment: the paper's experiment (data set, model, setting).
        metric: what is compared.
        paper: the paper's value as printed.
        chapter: the chapter whose results hold ours (file stem).
        ours: keys of our value(s); with two keys the row compares the change ``ours[0] -> ours[1]``.
        direction: two keys: ``"decrease"`` or ``"increase"`` (the paper's direction); one key: ``"below"`` or
            ``"above"`` ``threshold``.
        paper_value: the paper's change (two keys) or value (one key), in row units; None when the paper
            gives only a direction.
        tolerance: how close our number must be to ``paper_value`` for *reproduced in magnitude*.
        scale_factor: multiply our values (and intervals) by this, e.g. 100 for fractions -> %.
        note: what differs in protocol between the paper and this project.
        threshold: the bound of ``"below"`` / ``"above"`` (the null value of a one-key row).
        test: key of the row's test under ``metrics["tests"]`` (see :func:`evidence`), or None (untested).
        claim: rows sharing a claim are one family: their p-values get Holm's correction together.
        comparable: ``comparable(metrics, protocol)`` says whether magnitudes may be compared (default: yes
            when ``paper_value`` is given).
        role: ``"primary"`` or ``"robustness"`` (robustness rows are shown in their own table).
        derive: optional ``derive(metrics) -> values`` used instead of reading ``ours``.
    """

    experiment: str
    metric: str
    paper: str
    chapter: str
    ours: tuple[str, ...]
    direction: str
    paper_value: float | None = None
    tolerance: float | None = None
    scale_factor: float = 1.0
    note: str = ""
    threshold: float = 0.0
    test: str | None = None
    claim: str | None = None
    comparable: Callable[[Metrics, Metrics], bool] | None = None
    role: str = "primary"
    derive: Callable[[Metrics], list[float] | None] | None = None

    def __post_init__(self) -> None:
        allowed = ("decrease", "increase") if len(self.ours) == 2 else ("below", "above")
        if len(self.ours) not in (1, 2) or self.direction not in allowed:
            raise ValueError(f"row {self.metric!r}: with {len(self.ours)} key(s) direction must be one of {allowed}, "
                             f"got {self.direction!r}")
        if len(self.ours) == 2 and self.paper_value is not None \
                and (self.paper_value > 0) != (self.direction == "increase"):
            raise ValueError(f"row {self.metric!r}: paper_value {self.paper_value} contradicts {self.direction!r}")
        if self.role not in ("primary", "robustness"):
            raise ValueError(f"role must be 'primary' or 'robustness', got {self.role!r}")

    # ------------------------------------------------------------------ reading
    def values(self, metrics: Metrics) -> list[float] | None:
        """Our value(s) in row units, or None when a key is missing or not a finite number."""
        raw = self.derive(metrics) if self.derive is not None else [lookup(metrics, k) for k in self.ours]
        vals = None if raw is None else [_num(v) for v in raw]
        if vals is None or any(v is None for v in vals):
            return None
        return [v * self.scale_factor for v in vals]

    def test_record(self, metrics: Metrics) -> Mapping[str, Any] | None:
        """The chapter's record of this row's test (see :func:`evidence`), or None."""
        if self.test is None:
            return None
        record = lookup(metrics.get("tests", {}) or {}, self.test)
        return record if isinstance(record, Mapping) and record.get("test") else None

    def raw_pvalue(self, metrics: Metrics) -> float | None:
        record = self.test_record(metrics)
        return None if record is None else _num(record.get("p"))

    # ------------------------------------------------------------------ judging
    def judge(self, metrics: Metrics | None, protocol: Metrics | None = None,
              pvalue: float | None = None) -> Judgement:
        """Judge this row on one chapter's ``metrics`` (and ``protocol``); ``pvalue`` overrides the record's
        p-value (the scoreboard passes the Holm-adjusted one)."""
        vals = self.values(metrics) if metrics is not None else None
        if vals is None:
            return Judgement(None, "not run")
        relative = (vals[1] - vals[0]) / abs(vals[0]) if len(vals) == 2 and vals[0] != 0 else None
        record = self.test_record(metrics)
        if record is None:
            return Judgement(vals, "untested", "-", relative=relative)
        p = pvalue if pvalue is not None else _num(record.get("p"))
        ci = record.get("ci95")
        ci = None if ci is None else [float(c) * self.scale_factor for c in ci]
        text = record["test"] + _p_text(p, record) + \
            (f", 95% CI [{ci[0]:.3g}, {ci[1]:.3g}]" if ci is not None else "")
        resolution = (ci[1] - ci[0]) / 2 if ci is not None else None
        if len(vals) == 2:
            effect, null, sign = vals[1] - vals[0], 0.0, (-1.0 if self.direction == "decrease" else 1.0)
        else:
            effect, null, sign = vals[0], self.threshold, (-1.0 if self.direction == "below" else 1.0)
        paper_effect = None if self.paper_value is None else self.paper_value - (0.0 if len(vals) == 2 else null)

        def out(verdict: str) -> Judgement:
            return Judgement(vals, verdict, text, resolution, relative, p)

        if p is not None:
            significant = p < ALPHA
            side = sign * (effect - null)
        elif ci is not None:
            lo, hi = ci
            significant = hi < null or lo > null
            side = sign * ((lo + hi) / 2 - null)
        else:
            return Judgement(vals, "untested", text, relative=relative)
        if not significant:
            below = paper_effect is not None and resolution is not None and abs(paper_effect) < resolution
            return out("below resolution" if below else "not established")
        if side <= 0:
            return out("not reproduced")
        comparable = self.paper_value is not None and self.tolerance is not None and (
            self.comparable is None or self.comparable(metrics, protocol or {}))
        ours = effect if len(vals) == 2 else vals[0]
        if comparable and abs(ours - self.paper_value) <= self.tolerance:
            return out("reproduced in magnitude")
        return out("reproduced in direction")

    def format(self, vals: list[float] | None) -> str:
        """Our value(s) as printed, e.g. ``"37 -> 25"``."""
        if vals is None:
            return "-"
        return " -> ".join(f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}" for v in vals)
