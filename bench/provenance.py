"""Where a bench figure comes from: the commit (dirty when the tree was), the machine, the wall time."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from uwm_ros.tools.demo import machine

ROOT = Path(__file__).resolve().parents[1]


def provenance(started: float) -> dict:
    """``started``: the run's ``time.time()`` at its start."""
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    return {"commit": commit, "machine": machine(), "seconds": round(time.time() - started, 1)}
