"""Crash-safe commits: write aside, fsync, rename into place, fsync the parent.

Datasets (episodes), checkpoints, latent caches and recorded bags are all committed this way, so a
crash or SIGKILL leaves either the complete directory under its final name or nothing there; single
files (a run's config.yaml, a cache's info.json) are replaced the same way by ``replace_file``.
A directory that is replaced (the latest checkpoint) is swapped with its new version in one atomic
step, so its name always holds a complete one, the old or the new.

Staging directories and files are siblings named ``.<final name>.tmp-<8 hex>`` (being written,
or the old version after a swap) and, where the atomic swap is unavailable,
``.<final name>.old-<8 hex>`` (the old version moved aside for an instant); ``recover_staging``
clears what a kill left of them.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import uuid
from pathlib import Path

STAGING_NAME = re.compile(r"^\.(?P<final>.+)\.(?P<kind>tmp|old)-[0-9a-f]{8}$")
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def staging_path(final: str | os.PathLike, kind: str = "tmp") -> Path:
    """A fresh sibling of ``final`` to write into (``kind`` tmp) or to move it aside to (old)."""
    final = Path(final)
    return final.parent / f".{final.name}.{kind}-{uuid.uuid4().hex[:8]}"


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


def replace_directory(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Make a fully written ``staging`` directory ``final``, replacing the one there, so that a kill
    at any instant leaves a complete directory under ``final``: the new one is flushed to disk first,
    then swapped with the old one in one step, then the old one is removed."""
    staging, final = Path(staging), Path(final)
    if not final.exists():
        return commit_directory(staging, final)
    fsync_tree(staging)
    if _exchange(staging, final):
        fsync_path(final.parent)
        shutil.rmtree(staging)  # the old version now
        return final
    aside = staging_path(final, "old")  # no atomic swap here: an instant without `final`, recovered
    os.rename(final, aside)
    os.rename(staging, final)
    fsync_path(final.parent)
    shutil.rmtree(aside)
    return final


def replace_file(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` so that a kill at any instant leaves the old or the new content
    there, never a part; concurrent writers each write their own staging file."""
    path = Path(path)
    staging = staging_path(path)
    try:
        staging.write_bytes(data.encode() if isinstance(data, str) else data)
        fsync_path(staging)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def recover_staging(parent: str | os.PathLike) -> list[str]:
    """Clear what killed commits left in ``parent``: an old version moved aside while its final
    name is empty is put back; every other staging directory or file is removed. Returns what was
    done."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    done = []
    for path in sorted(parent.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):  # newest first
        match = STAGING_NAME.match(path.name)
        if match is None:
            continue
        final = parent / match["final"]
        if match["kind"] == "old" and path.is_dir() and not final.exists():
            os.rename(path, final)
            done.append(f"restored {final.name} from {path.name}")
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path.name}")
        else:
            path.unlink(missing_ok=True)
            done.append(f"removed {path.name}")
    if done:
        fsync_path(parent)
    return done


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # a filesystem or kernel without it
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))
