"""What uwm-bag2dataset says about each bag (one line, and the --json-report entries) and the whole run."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from uwm_core.spatial import ACTION_NAMES


@dataclass
class EpisodeReport:
    """What happened to one bag; ``status`` is converted, checked (dry run), present (already in the
    dataset), skipped (outcome), incomplete or error."""

    bag: str
    status: str
    detail: str = ""
    task: str = ""
    outcome: str = ""
    action_source: str = ""
    steps: int = 0
    dropped: dict = field(default_factory=dict)  # reason -> number of steps
    max_frame_gap_s: dict = field(default_factory=dict)  # camera -> seconds
    action_min: list = field(default_factory=list)
    action_max: list = field(default_factory=list)
    episode_index: int | None = None  # the first episode written from this bag
    episodes: int = 0  # episodes written (a bag cut at gaps gives several)
    total_steps: int = 0  # steps of the bag before anything was dropped
    cuts: list = field(default_factory=list)  # where a gap split the bag, and why
    notes: list = field(default_factory=list)  # what the user should know (e.g. unused command topics)

    @property
    def drop_ratio(self) -> float:
        return 1.0 - self.steps / self.total_steps if self.total_steps else 0.0

    def line(self) -> str:
        if self.status == "error":  # the message names the bag itself
            return f"[{self.status:>10}] {self.detail}"
        head = f"[{self.status:>10}] {self.bag}"
        if self.status not in ("converted", "checked"):
            return f"{head}: {self.detail}"
        dropped = sum(self.dropped.values())
        parts = [f"task={self.task!r}", f"outcome={self.outcome}", f"steps={self.steps}",
                 f"dropped={dropped} ({self.drop_ratio:.0%}" +
                 (f": {'; '.join(f'{r}: {n}' for r, n in self.dropped.items())})" if dropped else ")"),
                 "max frame gap " + " ".join(f"{c}={g * 1e3:.0f}ms" for c, g in self.max_frame_gap_s.items()),
                 f"actions from {self.action_source}: " + " ".join(
                     f"{n}[{lo:+.3g},{hi:+.3g}]" for n, lo, hi in zip(ACTION_NAMES, self.action_min, self.action_max))]
        if self.cuts:
            parts.insert(3, f"split into {self.episodes or len(self.cuts) + 1} episodes at gaps "
                            f"({'; '.join(self.cuts)})")
        if self.episode_index is not None:
            first, last = self.episode_index, self.episode_index + max(self.episodes, 1) - 1
            parts.insert(0, f"episode {first}" if first == last else f"episodes {first}..{last}")
        return f"{head}: " + ", ".join(parts + self.notes)


def summary(reports: list[EpisodeReport], out, dry_run: bool = False, rolled_back: bool = False) -> str:
    """One paragraph on the whole run; ``rolled_back``: an error left the dataset unchanged."""
    counts = Counter(r.status for r in reports)
    done = [r for r in reports if r.status in ("converted", "checked")]
    steps, total = sum(r.steps for r in done), sum(r.total_steps for r in done)
    dropped = f", {1 - steps / total:.0%} of their steps dropped" if total and steps < total else ""
    if rolled_back:
        text = [f"nothing was written: {out} is unchanged ({len(done)} bag(s) were fine before the error)"]
    elif dry_run:
        text = [f"{len(done)} bag(s) with {steps} steps checked (dry run, nothing written){dropped}"]
    else:
        episodes = sum(r.episodes for r in done)
        text = [f"{len(done)} bag(s) converted into {out}: {episodes} episode(s) with {steps} steps{dropped}"]
    for status, label in (("present", "already in the dataset"), ("skipped", "skipped by outcome"),
                          ("incomplete", "incomplete (interrupted recordings)"), ("error", "bad")):
        if counts[status]:
            text.append(f"{counts[status]} {label}")
    return "; ".join(text)
