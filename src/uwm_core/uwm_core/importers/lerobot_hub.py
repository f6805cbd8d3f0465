"""Where a LeRobot dataset comes from: a local directory or a Hugging Face hub repo id.

A hub dataset is fetched with huggingface_hub's snapshot_download into the hub cache, lazily:
``meta/`` when the source is opened, each data and video file when an episode first needs it
(``LeRobotSource.file``). With ``HF_HUB_OFFLINE=1`` the cached snapshot is used.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import snapshot_download

from .lerobot_format import LeRobotFormatError


def resolve_source(root_or_repo_id: str, revision: str | None = None) -> tuple[Path, str, str | None]:
    """(local root, identity, hub repo id or None); for a hub id, only meta/ is fetched now."""
    path = Path(root_or_repo_id)
    if path.exists():
        if not path.is_dir():
            raise LeRobotFormatError(f"{path}: not a directory (a LeRobot dataset is a directory)")
        return path, str(path.resolve()), None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", root_or_repo_id):
        raise LeRobotFormatError(f"{root_or_repo_id}: no such directory, and not a hub repo id (owner/name)")
    root = hub_download(root_or_repo_id, revision, ["meta/**"], "no such local directory either; ")
    return root, root_or_repo_id, root_or_repo_id


def hub_download(repo_id: str, revision: str | None, patterns: list[str], hint: str = "") -> Path:
    """The local snapshot root of the hub dataset ``repo_id`` holding (at least) ``patterns``."""
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns))
    except Exception as exc:  # offline, no network, unknown repo, no access: one clear message
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint += "HF_HUB_OFFLINE is set." if offline else "is the network reachable and the repo id right?"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LeRobotFormatError(f"{repo_id}: cannot fetch {', '.join(patterns)} from the Hugging Face hub "
                                 f"({type(exc).__name__}: {detail}); {hint} Or download the dataset where the "
                                 f"network allows and pass its local directory") from None
