"""The book's first screen: what the companion found, per paper claim and scale, from the committed results.

The introduction opens with :func:`summary_markdown` (a paragraph per claim of the paper: the verdicts of its
primary scoreboard rows at each scale, and the row that says why) and :func:`summary_figure` (the same as a
claims x scales grid). Both read :func:`kpe_lib.book.scoreboard.scoreboard`, so they can never disagree with
the scoreboard page; the main build writes them into ``<book>/generated/``.

Example:
    >>> [c.key for c in CLAIMS]
    ['sparsity', 'semantics', 'copying', 'memorisation', 'quality']
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kpe_lib.book.scoreboard import ScoreboardEntry, chapter_entries, scoreboard
from kpe_lib.book.verdicts import Row

__all__ = ["PaperClaim", "CLAIMS", "ClaimStatus", "claim_status", "summary_markdown", "summary_figure",
           "plain_reading", "PLAIN"]

REPRODUCED = ("reproduced in magnitude", "reproduced in direction")
SCALES = ("cpu", "gpu", "paper")  # smoke only checks the wiring: its verdicts mean nothing


@dataclass(frozen=True)
class PaperClaim:
    """One claim of the paper and the scoreboard rows that test it.

    Attributes:
        key: short name.
        title: the claim in one sentence.
        chapters: the chapters (two-digit numbers) that test it.
        rows: selects the claim's rows from :data:`~kpe_lib.book.scoreboard.ROWS` (primary rows decide it).
        control: selects robustness rows shown as the claim's control line (None: none).
        control_text: what the control asks, in words.
    """

    key: str
    title: str
    chapters: tuple[str, ...]
    rows: Callable[[Row], bool]
    control: Callable[[Row], bool] | None = None
    control_text: str = ""


def _kts_change(row: Row) -> bool:
    return "-> KTS" in row.metric or "-> launch" in row.metric or "-> landing" in row.metric


CLAIMS: tuple[PaperClaim, ...] = (
    PaperClaim("sparsity", "Higher-energy samples lie in sparser regions of the training data.", ("03",),
               lambda r: r.chapter == "03_cifar_support"),
    PaperClaim("semantics", "Higher-energy samples carry stronger semantics.", ("05",),
               lambda r: r.chapter == "05_semantics_guidance" and (r.claim or "").startswith("semantics")),
    PaperClaim("copying", "Extreme late energy (the terminal spike of the empirical closed form) goes with "
               "copying training images.", ("02",),
               lambda r: r.chapter == "02_efm_memorization" and not r.metric.startswith("F_mem")),
    PaperClaim("memorisation", "Kinetic trajectory shaping (KTS) lowers memorisation without retraining.",
               ("02", "04"), lambda r: r.metric.startswith("F_mem") and _kts_change(r) and r.claim is None,
               control=lambda r: r.claim == "phase structure",
               control_text="does KTS do more than a constant gain of the same time budget (stopping short)?"),
    PaperClaim("quality", "KTS changes sample quality as the paper reports (FID, KID, recall, semantic score: "
               "better with the launch and the balanced setting, worse with a strong landing).",
               ("04", "05"), lambda r: not r.metric.startswith("F_mem") and r.chapter != "02_efm_memorization"
               and r.role == "primary" and (_kts_change(r) or "tau_split" in r.metric)),
)


@dataclass
class ClaimStatus:
    """One claim at one scale.

    Attributes:
        claim: the claim.
        scale: the scale.
        entries: its primary scoreboard entries that were run.
        controls: its control entries that were run.
        rebuilt: {rebuild name: verdicts of the primary rows that rebuild ran}.
    """

    claim: PaperClaim
    scale: str
    entries: list[ScoreboardEntry]
    controls: list[ScoreboardEntry]
    rebuilt: dict[str, list[str]]

    @property
    def counts(self) -> Counter:
        """Verdict -> number of primary rows."""
        return Counter(e.verdict for e in self.entries)

    @property
    def reproduced(self) -> int:
        return sum(self.counts[v] for v in REPRODUCED)

    def verdict_text(self) -> str:
        """e.g. ``"2 of 6 rows reproduced (in direction 2); 3 not established, 1 below resolution"``."""
        if not self.entries:
            return "not run"
        c = self.counts
        kinds = [f"{c[v]} {v.removeprefix('reproduced ')}" for v in REPRODUCED if c[v]]
        head = f"{self.reproduced} of {len(self.entries)} rows reproduced" + (f" ({', '.join(kinds)})" if kinds else "")
        rest = [f"{n} {v}" for v, n in c.most_common() if v not in REPRODUCED]
        return head + ("; " + ", ".join(rest) if rest else "")

    def why(self) -> str:
        """The claim's first primary row as evidence, and its control rows."""
        if not self.entries:
            return ""
        e = self.entries[0]
        text = f"{e.row.metric}: {e.value} ({_test(e)}), *{e.verdict}*"
        if self.controls:
            text += ". Control: " + self.claim.control_text + " " + "; ".join(
                f"{c.row.metric}: {c.value} ({_test(c)}), *{c.verdict}*" for c in self.controls)
        return text


def _status(claim: PaperClaim, scale: str, entries: list[ScoreboardEntry]) -> ClaimStatus:
    """The claim's primary and control rows among ``entries`` (entries of one scale), with their rebuilds."""
    run = [e for e in entries if e.verdict != "not run"]
    primary = [e for e in run if e.row.role == "primary" and claim.rows(e.row)]
    controls = [e for e in run if claim.control is not None and claim.control(e.row)]
    rebuilt: dict[str, list[str]] = {}
    for e in primary:
        for name, verdict in e.replicates.items():
            rebuilt.setdefault(name, []).append(verdict)
    return ClaimStatus(claim, scale, primary, controls, rebuilt)


def _test(entry: ScoreboardEntry) -> str:
    """The entry's test and its p-value / interval, without the resolution and rebuild remarks."""
    return entry.evidence.split(";")[0]


def claim_status(results_dir: str | Path, scales: tuple[str, ...] = SCALES) -> list[ClaimStatus]:
    """Every claim of :data:`CLAIMS` at every scale, from the scoreboard of ``results_dir``."""
    entries = scoreboard(results_dir, scales)
    return [_status(claim, scale, [e for e in entries if e.scale == scale]) for claim in CLAIMS for scale in scales]


#: Each verdict in plain words, for counts of rows.
PLAIN = {
    "reproduced in magnitude": "hold at the paper's size",
    "reproduced in direction": "hold in direction",
    "not established": "are not shown (chance, or a verdict that changes with the seed)",
    "below resolution": "are too small for this run to see",
    "not reproduced": "go the other way",
    "untested": "have no test",
}


def plain_reading(chapter: str, metrics, protocol=None, scale: str = "this run") -> str:
    """"What this means" for one chapter, in plain words, from its own results (Markdown bullets).

    For every claim of :data:`CLAIMS` that the chapter tests: what the paper says, how many of the chapter's
    primary rows hold, the first of them with its number and test, and what the claim's control rows say.

    Args:
        chapter: the chapter's file stem, e.g. ``"04_celeba_kts"``.
        metrics, protocol: what the chapter writes to its results file.
        scale: the scale, for the text.
    """
    entries = chapter_entries(chapter, metrics, protocol)
    lines = []
    for claim in CLAIMS:
        status = _status(claim, scale, entries)
        primary, controls = status.entries, status.controls
        if not primary:
            continue
        head = primary[0]
        text = (f"- **The paper:** {claim.title} **Here (`{scale}`):** of {len(primary)} row"
                f"{'s' if len(primary) > 1 else ''} testing it, " +
                ", ".join(f"{n} {PLAIN[v]}" for v, n in status.counts.most_common()) +
                f". First of them: {head.row.metric}, {head.value} ({_test(head)}).")
        if controls:
            held = [c for c in controls if c.verdict in REPRODUCED]
            shown = "; ".join(f"{c.row.metric.split('->')[-1].strip()}: {c.value} ({_test(c)})" for c in controls)
            text += (f" **Control:** against a constant gain with the same time budget ({shown}), KTS does "
                     + ("measurably more in " + f"{len(held)} of {len(controls)}: its shape matters there."
                        if held else "not do measurably more: here its effect can be explained by stopping "
                                     "short of t = 1, not by the shape of the schedule."))
        lines.append(text)
    if not lines:
        return "This chapter tests none of the paper's headline claims directly."
    return "\n".join(lines)


def summary_markdown(results_dir: str | Path, figure: str | None = None) -> str:
    """The introduction's summary: per claim, the verdict at each scale and one line of why.

    Args:
        results_dir: the project's ``results/`` folder.
        figure: path of :func:`summary_figure`'s image relative to the page, shown first (None: no figure).
    """
    statuses = claim_status(results_dir)
    lines = ["## What this companion found", "",
             "Generated from the committed results by the book's build, with the scoreboard's rules: a verdict is "
             "*reproduced* only when a test chosen for the design rejects the null in the paper's direction and "
             "the verdict survives rebuilding the book with another seed. The `cpu` scale runs small models on two "
             "CPU cores; read its verdicts with the chapters' discussion of what differs from the paper.", ""]
    if figure:
        lines += [f"```{{figure}} {figure}", ":name: fig-summary", ":width: 100%", "",
                  "Each paper claim (rows) at each scale (columns): how many of its primary scoreboard rows are "
                  "reproduced (green) or not reproduced (red); \"controls\" counts the control rows (for KTS: "
                  "shaping beyond a constant gain of the same time budget) that hold. Grey cells were not run. The "
                  "lines below name the rows.", "```", ""]
    for claim in CLAIMS:
        chapters = ", ".join(str(int(c)) for c in claim.chapters)
        lines.append(f"**{claim.title}** (chapter{'s' if len(claim.chapters) > 1 else ''} {chapters})")
        lines.append("")
        for s in (s for s in statuses if s.claim is claim and s.entries):
            text = f"- `{s.scale}`: {s.verdict_text()}"
            if s.rebuilt:
                text += "; rebuilt with " + ", ".join(
                    f"{name}: {sum(v in REPRODUCED for v in vs)} of {len(vs)} reproduced" for name, vs in s.rebuilt.items())
            lines.append(text + ". " + s.why() + ".")
        if not any(s.entries for s in statuses if s.claim is claim):
            lines.append("- not run at any scale yet.")
        lines.append("")
    idle = [scale for scale in SCALES if not any(s.entries for s in statuses if s.scale == scale)]
    if idle:
        lines += [f"Not run yet at the {' and '.join(f'`{x}`' for x in idle)} scale{'s' if len(idle) > 1 else ''} "
                  "(the commands are in {doc}`how_to_run`).", ""]
    return "\n".join(lines)


def summary_figure(results_dir: str | Path, path: str | Path) -> Path:
    """Draw the claims x scales grid of :func:`claim_status` into ``path`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from kpe_lib._files import atomic_path

    statuses = claim_status(results_dir)
    columns: list[tuple[str, str | None]] = []
    for scale in SCALES:
        columns.append((scale, None))
        for name in sorted({n for s in statuses if s.scale == scale for n in s.rebuilt}):
            columns.append((scale, name))
    fig, ax = plt.subplots(figsize=(2.0 + 1.9 * len(columns), 0.75 * len(CLAIMS) + 1.1), layout="constrained")
    cmap = plt.get_cmap("RdYlGn")
    for i, claim in enumerate(CLAIMS):
        for j, (scale, rebuild) in enumerate(columns):
            s = next(x for x in statuses if x.claim is claim and x.scale == scale)
            verdicts = [e.verdict for e in s.entries] if rebuild is None else s.rebuilt.get(rebuild, [])
            if not verdicts:
                colour, text = "#d9d9d9", "not run" if rebuild is None else "not rebuilt"
            else:
                good = sum(v in REPRODUCED for v in verdicts)
                bad = sum(v == "not reproduced" for v in verdicts)
                share = 0.5 + 0.5 * (good - bad) / len(verdicts)
                colour = cmap(0.15 + 0.7 * share)
                text = f"{good} of {len(verdicts)} reproduced" + (f"\n{bad} against" if bad else "")
                if rebuild is None and s.controls:
                    held = sum(c.verdict in REPRODUCED for c in s.controls)
                    text += f"\ncontrols: {held} of {len(s.controls)} hold"
            ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=colour, edgecolor="white", linewidth=2))
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=10, color="black")
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(CLAIMS), 0)
    ax.set_xticks(np.arange(len(columns)) + 0.5,
                  [f"{s}" if r is None else f"{s}, rebuilt\n({r})" for s, r in columns])
    ax.set_yticks(np.arange(len(CLAIMS)) + 0.5, [c.key for c in CLAIMS])
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("Primary scoreboard rows per paper claim and scale", pad=28, fontsize=11)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
