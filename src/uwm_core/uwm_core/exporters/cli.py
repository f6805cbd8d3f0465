"""uwm-export: a uwm dataset written in another format, checked after writing.

    uwm-export lerobot data/demos --out exports/demos_lerobot --robot-type franka
"""
from __future__ import annotations

import argparse
import sys

from ..importers.episodes import SourceError, parse_indices
from ..importers.lerobot_checks import check_lerobot_dataset
from .lerobot import DATA_FILE_MB, VIDEO_FILE_MB, export_lerobot


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uwm-export", description="Export a uwm dataset to another format.")
    sub = parser.add_subparsers(dest="format", required=True)
    lerobot = sub.add_parser("lerobot", help="a LeRobot v3.0 dataset directory for LeRobotDataset; publish it with "
                                             "hf upload REPO DIR . --repo-type dataset, then "
                                             "hf repos tag create REPO v3.0 --repo-type dataset")
    lerobot.add_argument("dataset", help="uwm dataset")
    lerobot.add_argument("--out", required=True, help="new directory for the LeRobot dataset")
    lerobot.add_argument("--episodes", help="episodes to export, e.g. 0-99 (default: all)")
    lerobot.add_argument("--vcodec", default="libsvtav1", help="video encoder (LeRobot's default libsvtav1; h264 also works)")
    lerobot.add_argument("--crf", type=int, default=30, help="encoder quality (lower is better and larger)")
    lerobot.add_argument("--gop", type=int, default=2, help="keyframe interval in frames (LeRobot uses 2)")
    lerobot.add_argument("--robot-type", help="info.json robot_type, e.g. franka")
    lerobot.add_argument("--data-file-mb", type=float, default=DATA_FILE_MB,
                         help="start a new data parquet file after this size")
    lerobot.add_argument("--video-file-mb", type=float, default=VIDEO_FILE_MB,
                         help="start a new mp4 file after this size")
    args = parser.parse_args(argv)
    try:
        report = export_lerobot(args.dataset, args.out, parse_indices(args.episodes) if args.episodes else None,
                                args.vcodec, args.crf, args.gop, args.robot_type, args.data_file_mb, args.video_file_mb)
    except KeyboardInterrupt:
        print("uwm-export: interrupted; nothing was written to the output directory", file=sys.stderr)
        sys.exit(130)
    except (SourceError, ValueError, FileNotFoundError) as exc:
        print(f"uwm-export: error: {exc}", file=sys.stderr)
        sys.exit(2)
    problems = check_lerobot_dataset(args.out)
    print(f"exported {report.episodes} episode(s) ({report.frames} frames) to {args.out}: {report.data_files} data "
          f"file(s), {report.video_files} video file(s)")
    if problems:
        print("uwm-export: error: the result fails the LeRobot v3.0 checks:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)
    print("LeRobot v3.0 consistency checks passed")
