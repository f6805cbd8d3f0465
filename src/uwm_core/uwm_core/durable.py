"""Crash-safe directory commits: write aside, fsync, rename into place, fsync the parent.

Datasets (episodes), checkpoints, latent caches and recorded bags are all committed this way, so a
crash or SIGKILL leaves either the complete directory under its final name or nothing there.
"""
from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | os.PathLike) -> None:
    """Flush one file's or directory's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file and directory below ``path`` and ``path`` itself."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath)


def commit_directory(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Make a fully written ``staging`` directory visible as ``final`` (which must not exist)."""
    staging, final = Path(staging), Path(final)
    fsync_tree(staging)
    os.rename(staging, final)
    fsync_path(final.parent)
    return final
