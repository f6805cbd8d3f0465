"""One ROS domain per test, and one per module-scoped ROS fixture.

A test's nodes and processes never discover another test's, however long the endpoints of a
killed process linger in discovery (a SIGKILLed node cannot say goodbye): every domain is held
with a lock file while in use, so parallel test sessions on one machine never share one either,
and a process walks through the domains in turn, so it reuses one only after ~200 others.
"""
from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import tempfile
from pathlib import Path

FIRST, LAST = 1, 200  # valid ids are 0..232 (0 is the robot's default domain, kept clear)
LOCK_DIR = Path(tempfile.gettempdir()) / "uwm-ros-test-domains"
_sequence = itertools.count(os.getpid())


@contextlib.contextmanager
def claimed_domain():
    """Hold a free domain id and set ``ROS_DOMAIN_ID`` to it (so started processes join it)."""
    LOCK_DIR.mkdir(exist_ok=True)
    for _ in range(LAST - FIRST + 1):
        domain = FIRST + next(_sequence) % (LAST - FIRST + 1)
        with open(LOCK_DIR / f"{domain}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another test session holds it
            previous = os.environ.get("ROS_DOMAIN_ID")
            os.environ["ROS_DOMAIN_ID"] = str(domain)
            try:
                yield domain
            finally:
                if previous is None:
                    os.environ.pop("ROS_DOMAIN_ID")
                else:
                    os.environ["ROS_DOMAIN_ID"] = previous
            return
    raise RuntimeError(f"every ROS domain {FIRST}..{LAST} is held by another test session ({LOCK_DIR})")
