"""Shared helpers of the policy node tests (imported by conftest.py and the test modules)."""
import threading
import time

import numpy as np
import torch

from uwm_core.checkpoint import save_checkpoint
from uwm_core.config import load_model_config
from uwm_core.model import UnifiedWorldModel
from uwm_core.processing import ActionNormalizer

CAMERAS = ["left", "right", "wrist"]
# Small action ranges: whatever the random model samples stays a millimetre-scale motion.
ACTION_LOW = [-0.004] * 3 + [-0.02] * 3 + [0.0]
ACTION_HIGH = [0.004] * 3 + [0.02] * 3 + [1.0]


def make_checkpoint(path, preset="tiny", overrides=None, normalizer=None):
    """A randomly initialised checkpoint with cameras [left, right, wrist] and 7-D actions."""
    torch.manual_seed(0)
    cfg = load_model_config(preset, {"cameras": CAMERAS, "action_dim": 7, **(overrides or {})})
    model = UnifiedWorldModel(cfg)
    if model.vae.needs_latent_statistics:
        model.vae.estimate_latent_statistics(torch.rand(8, 3, cfg.image_size, cfg.image_size))
    save_checkpoint(path, model, normalizer or ActionNormalizer(np.array(ACTION_LOW), np.array(ACTION_HIGH)))
    return str(path)


class RecordingModel:
    """A real WorldModel whose predict_actions calls are recorded, optionally slowed down or altered.

    Test scaffolding around the real model (the issue's "artificially slow model"): ``delay_s`` sleeps
    after each inference, ``alter(call_index, actions)`` may replace the returned chunk.
    """

    def __init__(self, wm, delay_s=0.0, alter=None):
        self._wm, self.delay_s, self.alter = wm, delay_s, alter
        self.calls = []  # (start monotonic, end monotonic, actions returned, proprioceptive state given)
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._wm, name)

    def predict_actions(self, images, seed=None, state=None):
        start = time.monotonic()
        actions = self._wm.predict_actions(images, seed=seed, state=state)
        time.sleep(self.delay_s)
        with self._lock:
            index = len(self.calls)
            if self.alter is not None:
                actions = self.alter(index, actions)
            self.calls.append((start, time.monotonic(), np.array(actions), None if state is None else np.array(state)))
        return actions


def pose7(msg):
    p, o = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w])


def same_rotation(q1, q2, tol=1e-9):
    return abs(abs(float(np.dot(q1, q2))) - 1.0) < tol


def periods_between(messages, period_s=0.1):
    """Header stamps' steps, in control periods, between consecutive command messages: the node
    stamps each command with its control slot, so on-grid commands step by whole periods >= 1."""
    stamps = np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in messages], dtype=np.int64)
    return np.diff(stamps) / (period_s * 1e9)


def assert_on_the_control_grid(messages, period_s=0.1):
    steps = periods_between(messages, period_s)
    assert steps.size and np.all(steps >= 1) and np.allclose(steps, np.round(steps), atol=1e-9), steps
