"""Which action to execute at each control tick, and when to ask for the next chunk.

Receding horizon as in the paper (execute the first ``execute_steps`` actions of each chunk,
then replan), made asynchronous:

* A chunk's action i is meant for the i-th tick *of robot motion* after the observation it was
  computed from. When a chunk arrives while the previous one was still moving the robot, the
  actions for the ticks that motion covered are skipped (never executed late); ticks spent holding
  still do not count, since the scene then stays as observed.
* A new chunk takes over when the current one has executed its first ``execute_steps`` actions.
  Without one the robot holds (a stall).
* To avoid stalls the next chunk is requested ``lead`` ticks before the current one runs out,
  ``lead = ceil((latency + margin) / period)`` from the recent inference latencies (their max).
  A chunk requested ``lead`` ticks early starts at action ``lead`` and executes the remaining
  ``execute_steps - lead``. When ``lead >= execute_steps`` (inference slower than a whole execution
  window, e.g. the paper preset on a CPU) no action of a pipelined chunk would be left, so the
  scheduler falls back to the paper's synchronous scheme: request when the chunk is done, hold
  while the next one computes, then execute it from action 0.

Ticks run on a fixed time grid (``TickGrid``): a timer callback that ran late is followed at once
by the next one, on time; that one sends nothing, so actions never go out in a burst. Like a
hold, such a tick is not a tick of motion: the chunk's schedule shifts instead of skipping an
action.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

LATENCY_WINDOW = 5
HISTORY = 8
MIN_SPACING = 0.5  # periods between two sent actions at the least
EARLY = 1e-3  # periods: clock read-out noise, a tick this early still counts for its slot


class TickGrid:
    """Control slots at ``start + k * period`` on the timer's clock (integer nanoseconds)."""

    def __init__(self, period_s: float, start_ns: int):
        self.period_ns = round(period_s * 1e9)
        self.start_ns = start_ns
        self.last_slot = 0  # slot 0 is the timer's start; its first tick serves slot 1
        self.last_claimed_ns: int | None = None
        self.bunched = 0  # ticks dropped: too soon after a late one

    def claim(self, now_ns: int) -> int | None:
        """The stamp (ns) of the slot this tick serves, or None when the tick must do nothing."""
        slot = math.floor((now_ns - self.start_ns) / self.period_ns + EARLY)
        if slot < self.last_slot:  # the clock jumped back (a simulator reset): follow it
            self.last_slot, self.last_claimed_ns = slot - 1, None
        too_soon = self.last_claimed_ns is not None and now_ns - self.last_claimed_ns < MIN_SPACING * self.period_ns
        if slot == self.last_slot or too_soon:
            self.bunched += 1
            return None
        self.last_slot, self.last_claimed_ns = slot, now_ns
        return self.start_ns + slot * self.period_ns


@dataclass
class Chunk:
    actions: np.ndarray  # (action_horizon, action_dim)
    chunk_id: int
    motion_at_request: int  # the scheduler's motion tick count when its observation was taken
    latency_s: float
    index: int = 0  # next action to execute
    first_index: int = 0  # actions skipped when it took over
    executed: list = field(default_factory=list)  # indices executed


class ChunkScheduler:
    def __init__(self, execute_steps: int, period_s: float, margin_s: float, initial_latency_s: float):
        self.execute_steps = execute_steps
        self.period_s = period_s
        self.margin_s = margin_s
        self._latencies = deque([initial_latency_s], maxlen=LATENCY_WINDOW)
        self._measured = False  # the initial (warm-up) latency is replaced by the first real one
        self.motion_ticks = 0
        self.current: Chunk | None = None
        self.waiting: Chunk | None = None  # arrived, takes over when the current one is done
        self.chunks_used = 0
        self.actions_skipped = 0
        self.chunks_stale = 0
        self.finished: deque[Chunk] = deque(maxlen=HISTORY)  # recent chunks that ran to their end

    # ------------------------------------------------------------------ latency and lead
    def record_latency(self, latency_s: float) -> None:
        if not self._measured:
            self._latencies.clear()
            self._measured = True
        self._latencies.append(latency_s)

    @property
    def latency_estimate_s(self) -> float:
        return max(self._latencies)

    @property
    def pipelined_lead(self) -> int:
        return math.ceil((self.latency_estimate_s + self.margin_s) / self.period_s)

    @property
    def lead_ticks(self) -> int:
        """Ticks before the current chunk runs out at which the next one is requested (0: synchronous)."""
        lead = self.pipelined_lead
        return lead if lead < self.execute_steps else 0

    # ------------------------------------------------------------------ per tick
    def remaining(self) -> int:
        return 0 if self.current is None else self.execute_steps - self.current.index

    def should_request(self, request_pending: bool) -> bool:
        """Ask for a new chunk now? (``request_pending``: one is being computed.)"""
        if request_pending or self.waiting is not None:
            return False
        return self.remaining() <= self.lead_ticks

    def offer(self, chunk: Chunk) -> None:
        """A chunk arrived; it takes over once the current one is done."""
        self.record_latency(chunk.latency_s)
        self.waiting = chunk

    def next_action(self) -> np.ndarray | None:
        """The action for this tick, switching to a waiting chunk when the current one is done."""
        if self.remaining() == 0:
            if self.current is not None:
                self.finished.append(self.current)
            self.current = None
            chunk, self.waiting = self.waiting, None
            if chunk is not None:
                skip = self.motion_ticks - chunk.motion_at_request
                if skip >= self.execute_steps:
                    self.chunks_stale += 1  # every action it planned for the motion ticks has passed
                else:
                    chunk.index = chunk.first_index = skip
                    self.actions_skipped += skip
                    self.chunks_used += 1
                    self.current = chunk
        if self.current is None:
            return None
        return self.current.actions[self.current.index]

    def executed(self) -> None:
        """The action returned by next_action was sent to the robot."""
        self.current.executed.append(self.current.index)
        self.current.index += 1
        self.motion_ticks += 1

    def drop(self) -> None:
        """Forget every chunk (after a hold for safety: plans made before it are void)."""
        self.current = None
        self.waiting = None
