"""uwm-bag2dataset: convert recorded rosbag2 episodes into the training dataset.

    uwm-bag2dataset BAG_OR_DIR... --out DATASET [--config config/convert.yaml]
                    [--include-failed] [--skip-bad] [--dry-run]

Each bag is one episode. Steps are the command stream resampled to ``fps`` (see
``uwm_core.data.alignment``); each camera contributes its latest frame at or before the step time,
and a step whose frame is older than ``max_frame_gap_s`` is dropped and reported. Actions come
from the recorded ``~/delta_ee`` commands, else from target or measured pose differences; the
gripper is absolute. With ``state: true`` each step also stores the proprioceptive state
(``uwm_core.spatial.proprio_state``): the latest measured end-effector pose at or before the step
and the gripper command in effect before it. Two passes over each bag keep memory to two bags'
frames (one bag is written while the next is read): the first (``episode_planning``) reads stamps
and the small messages (of a frame only its header, where the bag is indexed MCAP), the second
(``frame_loading``) reads and decodes only the frames that the steps use.

The dataset is updated all-or-nothing (``uwm_core.data.DatasetUpdate``): it is either fully
updated or left as it was, also when the conversion is killed. Episodes whose source bag is
already in the dataset are skipped, so re-running on the same bags adds nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from uwm_core.data import DatasetBusyError, DatasetUpdate, open_dataset
from uwm_core.spatial import ACTION_DIM
from uwm_teleop.bag_reading import META_OUTCOME, META_SOFTWARE, META_TASK, Bag, BagCandidate, BagError, find_bags
from uwm_teleop.conversion_config import ConvertConfig
from uwm_teleop.conversion_report import EpisodeReport, summary
from uwm_teleop.episode_planning import EpisodePlan, plan_episode
from uwm_teleop.frame_loading import load_frames

DECODE_THREADS = 2
SKIPPED_OUTCOMES = ("failure", "discarded", "incomplete")  # incomplete: recorder stopped by Ctrl-C/SIGTERM
# exit codes of uwm-bag2dataset
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class ConversionError(RuntimeError):
    """A bad bag stopped the conversion; the dataset was left unchanged."""

    def __init__(self, message: str, reports: list[EpisodeReport]):
        super().__init__(message)
        self.reports = reports


def convert(paths, out, cfg: ConvertConfig, include_failed: bool = False, skip_bad: bool = False,
            dry_run: bool = False, progress: bool = True, allow_drops: bool = False) -> list[EpisodeReport]:
    """Convert the bags under ``paths`` into the dataset ``out``; returns one report per bag.

    Raises ``ConversionError`` (dataset unchanged) when a bag is bad and ``skip_bad`` is False.
    ``allow_drops`` converts bags that drop more than ``cfg.max_drop_ratio`` of their steps.
    Bag k+1 is read while bag k is written, so at most two bags' frames are held at a time.
    """
    candidates = find_bags(paths)
    update, present = (None, None) if dry_run else open_update(Path(out), cfg)
    reports: list[EpisodeReport] = []

    def finish(report: EpisodeReport) -> None:
        reports.append(report)
        if progress:
            tqdm.write(report.line(), file=sys.stderr)
        if report.status == "error" and not skip_bad:
            raise ConversionError(report.detail, reports)

    try:
        with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode") as decoders, \
                ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
            writing: Future | None = None  # the previous bag's episodes going into the dataset
            for candidate in tqdm(candidates, desc="bags", unit="bag", disable=not progress or len(candidates) < 2):
                report, episodes = _read_one(candidate, cfg, present, include_failed, allow_drops, decoders)
                if writing is not None:
                    finish(writing.result())
                    writing = None
                if episodes:
                    writing = writer.submit(_write_episodes, update, report, episodes)
                else:
                    finish(report)
            if writing is not None:
                finish(writing.result())
        if update is not None:
            update.commit()
    except BaseException:  # the executors have finished their work here, so nothing writes any more
        if update is not None:
            update.abort()
        raise
    return reports


def open_update(out: Path, cfg: ConvertConfig) -> tuple[DatasetUpdate, set[str]]:
    """The all-or-nothing update of the dataset ``out`` (holding its writer lock) and the source ids
    of the bags already in it; ValueError when ``out`` cannot take this conversion's episodes."""
    existed = out.exists()
    if existed:
        _check_appendable(open_dataset(out), cfg)
    update = DatasetUpdate(out, cameras=list(cfg.cameras), fps=cfg.fps, action_dim=ACTION_DIM,
                           state_dim=cfg.state_dim)
    try:
        dataset = open_dataset(out) if existed else None  # read again under the lock: what is in it now
        present = set() if dataset is None else {dataset.metadata(i).get("source_id")
                                                 for i in range(dataset.num_episodes)} - {None}
    except BaseException:
        update.abort()
        raise
    return update, present


def _check_appendable(dataset, cfg: ConvertConfig) -> None:
    wanted = (list(cfg.cameras), float(cfg.fps), ACTION_DIM, cfg.state_dim)
    found = (list(dataset.cameras), float(dataset.fps), int(dataset.action_dim), dataset.state_dim)
    if found != wanted:
        raise ValueError(f"cannot append to {dataset.path}: it has cameras {found[0]}, fps {found[1]:g}, action_dim "
                         f"{found[2]}, state_dim {found[3]}; the conversion makes cameras {wanted[0]}, fps "
                         f"{wanted[1]:g}, action_dim {wanted[2]}, state_dim {wanted[3]} (convert into another "
                         f"dataset, or change the config: state: {str(not cfg.state).lower()})")


def _read_one(candidate: BagCandidate, cfg: ConvertConfig, present: set[str] | None, include_failed: bool,
              allow_drops: bool, decoders: ThreadPoolExecutor) -> tuple[EpisodeReport, list[dict]]:
    """The report of one bag and the episodes to write from it (none when it is refused or skipped).

    ``present``: the source ids of the bags in the dataset (updated here); None in a dry run."""
    report = EpisodeReport(str(candidate.path), "error")
    if candidate.problem:
        report.detail = str(BagError(candidate.path, candidate.problem))
        return report, []
    if candidate.incomplete:
        report.status, report.detail = "incomplete", f"{candidate.incomplete}; skipped"
        return report, []
    try:
        with Bag(candidate.path) as bag:
            report.task = bag.custom.get(META_TASK, cfg.default_task)
            report.outcome = bag.custom.get(META_OUTCOME, "unknown")
            if present is not None and bag.source_id in present:
                report.status, report.detail = "present", f"already in the dataset (source id {bag.source_id})"
                return report, []
            if reason := _skip_reason(bag, include_failed):
                report.status, report.detail = "skipped", reason
                return report, []
            plan = plan_episode(bag, cfg, report, allow_drops)
            frames = load_frames(bag, plan, cfg.image_size, decoders)
            if present is None:
                report.status = "checked"
                return report, []
            present.add(bag.source_id)  # a copy of this bag later in the run is "present"
            return report, _episodes(candidate, bag, plan, frames, report)
    except BagError as err:
        report.status, report.detail = "error", str(err)
        return report, []


def _skip_reason(bag: Bag, include_failed: bool) -> str | None:
    outcome = bag.custom.get(META_OUTCOME, "")
    if outcome in SKIPPED_OUTCOMES and not include_failed:
        return f"outcome {outcome} (use --include-failed to convert it)"
    return None


def _episodes(candidate: BagCandidate, bag: Bag, plan: EpisodePlan, frames: dict, report: EpisodeReport) -> list[dict]:
    """The add_episode arguments of each contiguous segment of the bag."""
    episodes = []
    for part, (start, stop) in enumerate(plan.segments):
        rows = slice(start, stop)
        metadata = {
            "source": str(candidate.path.resolve()),
            "source_id": bag.source_id,
            "outcome": report.outcome,
            "recorded_with": bag.custom.get(META_SOFTWARE, "unknown (no uwm-recorder metadata)"),
            "action_source": report.action_source,
            "topics": plan.topics,
            "step_times_ns": plan.step_times[rows].tolist(),
            "frame_times_ns": {cam: t[rows].tolist() for cam, t in plan.frame_times.items()},
            "dropped_steps": report.dropped,
            "segment": {"index": part, "of": len(plan.segments), "cuts": report.cuts} if report.cuts else None,
        }
        episodes.append({"frames": {cam: f[rows] for cam, f in frames.items()}, "actions": plan.actions[rows],
                         "task": report.task, "metadata": metadata,
                         "state": None if plan.state is None else plan.state[rows]})
    return episodes


def _write_episodes(update: DatasetUpdate, report: EpisodeReport, episodes: list[dict]) -> EpisodeReport:
    for episode in episodes:
        index = update.add_episode(**episode)
        report.episode_index = index if report.episode_index is None else report.episode_index
        report.episodes += 1
    report.status = "converted"
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="uwm-bag2dataset", description=__doc__.split("\n\n")[0])
    parser.add_argument("bags", nargs="+", metavar="BAG_OR_DIR", help="bag directories, .mcap/.db3 files, "
                        "or directories holding bags (searched recursively)")
    parser.add_argument("--out", required=True, help="dataset directory (created, or appended to)")
    parser.add_argument("--config", help="conversion settings (config/convert.yaml); built-in defaults otherwise")
    parser.add_argument("--include-failed", action="store_true", help="also convert episodes recorded as failed "
                        "or discarded")
    parser.add_argument("--skip-bad", action="store_true", help="report bad bags and convert the others (the exit "
                        "code is still 1 when a bag was refused, unless --ok-if-skipped)")
    parser.add_argument("--ok-if-skipped", action="store_true", help="with --skip-bad: exit 0 although bags were "
                        "refused")
    parser.add_argument("--allow-drops", action="store_true", help="convert bags that drop more than max_drop_ratio "
                        "of their steps")
    parser.add_argument("--dry-run", action="store_true", help="read, align and decode everything, print the "
                        "report, write nothing")
    parser.add_argument("--json-report", help="also write the per-episode reports to this JSON file")
    args = parser.parse_args(argv)
    try:
        cfg = ConvertConfig.load(args.config)
        reports = convert(args.bags, args.out, cfg, args.include_failed, args.skip_bad, args.dry_run,
                          allow_drops=args.allow_drops)
        refused = [r for r in reports if r.status == "error"]
        status = EXIT_REFUSED if refused and not args.ok_if_skipped else EXIT_OK
        rolled_back = False
        if refused:
            print(f"{len(refused)} bag(s) refused" + ("" if args.ok_if_skipped else " (exit code 1; "
                  "--ok-if-skipped to accept)"), file=sys.stderr)
    except ConversionError as err:
        reports = err.reports
        print(f"error: {err}\nthe dataset {args.out} was left unchanged (use --skip-bad to convert the other bags)",
              file=sys.stderr)
        status, rolled_back = EXIT_REFUSED, True
    except (ValueError, OSError, DatasetBusyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(summary(reports, args.out, args.dry_run, rolled_back))
    if args.json_report:
        Path(args.json_report).write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
