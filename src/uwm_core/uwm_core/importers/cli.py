"""uwm-import: pretraining data into uwm datasets.

    uwm-import lerobot lerobot/droid_1.0.1 --out data/droid --mapping droid --sample 2000 --sample-by building
    uwm-import lerobot lerobot/droid_1.0.1 --out data/droid_videos --mapping droid --no-actions \\
        --exclude data/droid --sample 2000 --sample-by building --seed 1
    uwm-import hdf5 LIBERO/libero_90 --out data/libero90 --mapping libero

An interrupted import keeps the episodes written so far; run the same command again to continue.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .episodes import Selection, SourceError, parse_indices, parse_where, run_import
from .hdf5 import HDF5Source
from .lerobot import LeRobotSource
from .mapping import MappingError, load_mapping

log = logging.getLogger("uwm-import")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="uwm dataset to create or continue (resumes, no duplicates)")
    parser.add_argument("--mapping", help="mapping file: a name in config/import (droid, libero, ...) or a YAML path")
    parser.add_argument("--camera", action="append", default=[], metavar="OURS=KEY",
                        help="camera name and source key, repeatable (replaces the mapping's cameras)")
    parser.add_argument("--flip", choices=["none", "vertical", "horizontal", "both"], help="override the mapping's image flip")
    parser.add_argument("--fps", type=float, help="output rate (default: the mapping's, else the source's); "
                                                  "lower than the source resamples")
    parser.add_argument("--no-actions", action="store_true", help="import as action-free video (cotraining data)")
    select = parser.add_argument_group("episode selection")
    select.add_argument("--episodes", help="source episode positions, e.g. 0-99,250")
    select.add_argument("--match-task", metavar="REGEX", help="keep episodes whose task text matches (case-insensitive)")
    select.add_argument("--where", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                        help="keep episodes whose metadata KEY is one of the values, repeatable")
    select.add_argument("--exclude", action="append", default=[], metavar="DATASET",
                        help="skip source episodes already imported into this uwm dataset, repeatable")
    select.add_argument("--sample", type=int, metavar="N", help="a seeded random subset of N episodes")
    select.add_argument("--sample-by", metavar="KEY", help="spread the sample evenly over this metadata key (e.g. building)")
    select.add_argument("--seed", type=int, default=0, help="seed of --sample")


def selection_from(args) -> Selection:
    if args.sample is not None and args.sample < 1:
        raise SourceError(f"--sample: must be >= 1, got {args.sample}")
    return Selection(indices=parse_indices(args.episodes) if args.episodes else None, task=args.match_task,
                     where=parse_where(args.where), exclude=args.exclude, sample=args.sample,
                     sample_by=args.sample_by, seed=args.seed)


def parse_cameras(items: list[str]) -> dict[str, str] | None:
    """``["left=observation.images.exterior_1_left", ...]`` -> {"left": "observation.images..."}."""
    cameras = {}
    for item in items:
        ours, sep, key = item.partition("=")
        if not sep or not ours.strip() or not key.strip():
            raise SourceError(f"--camera: {item!r} is not OURS=KEY")
        cameras[ours.strip()] = key.strip()
    return cameras or None


def import_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uwm-import", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="format", required=True)
    lerobot = sub.add_parser("lerobot", help="a LeRobot v3.0 dataset directory or hub repo id")
    lerobot.add_argument("source", help="dataset directory or hub repo id (owner/name)")
    lerobot.add_argument("--revision", help="hub revision (branch, tag or commit)")
    add_common(lerobot)
    hdf5 = sub.add_parser("hdf5", help="robomimic / LIBERO HDF5 files (merged into one multitask dataset)")
    hdf5.add_argument("sources", nargs="+", help="HDF5 files or folders (searched recursively)")
    hdf5.add_argument("--source-fps", type=float, help="rate the demonstrations were recorded at (default: the mapping's)")
    hdf5.add_argument("--task", help="task text for every episode (default: from each file, see the mapping)")
    add_common(hdf5)
    args = parser.parse_args(argv)
    logging.basicConfig(format="uwm-import: %(levelname)s: %(message)s")
    try:
        selection = selection_from(args)
        mapping = load_mapping(args.mapping) if args.mapping else None
        cameras = parse_cameras(args.camera)
        if args.format == "lerobot":
            source = LeRobotSource.open(args.source, mapping, args.fps, args.revision, not args.no_actions,
                                        cameras, args.flip)
        else:
            if mapping is None:
                raise SourceError("--mapping: required for HDF5 files (libero, robomimic or a YAML path)")
            mapping.cameras = cameras or mapping.cameras
            mapping.flip = args.flip or mapping.flip
            if args.no_actions:
                mapping.actions = None
            source = HDF5Source.open(args.sources, mapping, args.fps, args.source_fps, args.task)
        report = run_import(source, args.out, selection)
    except KeyboardInterrupt:
        print("uwm-import: interrupted; the episodes written so far are kept: run the same command again to "
              "continue", file=sys.stderr)
        sys.exit(130)
    except (SourceError, MappingError, ValueError, FileNotFoundError) as exc:
        print(f"uwm-import: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"imported {report.imported} episode(s) ({report.frames} frames) into {args.out}"
          + (f"; {report.already_present} of the {report.selected} selected were already there"
             if report.already_present else ""))
