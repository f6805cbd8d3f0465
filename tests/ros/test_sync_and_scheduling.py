"""Frame-set selection by header stamps and the chunk schedule, as plain functions of time."""
import numpy as np
import pytest

from uwm_ros.policy.camera_sync import CameraBuffers, NotReady, camera_topic_mismatch
from uwm_ros.policy.chunk_scheduler import Chunk, ChunkScheduler, TickGrid

TOPICS = {"left": "/l", "right": "/r", "wrist": "/w"}


def filled(stamps_by_camera, keep_s=2.0):
    """Buffers holding these frames, each received when the newest stamp so far was taken."""
    buffers = CameraBuffers(list(TOPICS), keep_s, max_future_s=0.1)
    now = -np.inf
    for cam, stamps in stamps_by_camera.items():
        for stamp in stamps:
            now = max(now, stamp)
            assert buffers.add(cam, stamp, (cam, round(stamp, 4)), now) is None
    return buffers


def test_frame_sets_pick_latest_at_or_before_each_set_time():
    rng = np.random.default_rng(0)
    base = 100.0 + np.arange(60) / 30.0  # 30 Hz for 2 s
    stamps = {cam: base + rng.uniform(0, 0.01, base.size) + 0.004 * i for i, cam in enumerate(TOPICS)}
    buffers = filled(stamps)
    obs = buffers.frame_sets(now_s=base[-1] + 0.05, period_s=0.1, count=3, max_skew_s=0.05, max_age_s=0.5,
                             topics=TOPICS)
    newest = min(s[-1] for s in stamps.values())  # the camera that lags most defines the newest set
    for k, (frame_set, set_stamps) in enumerate(zip(obs.sets, obs.stamps)):
        target = newest - (2 - k) * 0.1
        for cam in TOPICS:
            expected = stamps[cam][stamps[cam] <= target + 1e-6].max()
            assert set_stamps[cam] == expected and frame_set[cam] == (cam, round(expected, 4))
    assert 0 <= obs.skew_s <= 1 / 30 + 0.01
    assert obs.age_s == pytest.approx(base[-1] + 0.05 - min(obs.stamps[-1].values()))


def test_out_of_order_frames_are_sorted_and_pruned():
    buffers = filled({"left": [1.0, 3.0, 2.0, 2.5]}, keep_s=1.0)
    assert [s for s in buffers._stamps["left"]] == [2.0, 2.5, 3.0]


@pytest.mark.parametrize("stamps, now, message", [
    ({"left": [10.0], "right": [10.0], "wrist": []}, 10.0, "camera 'wrist' (/w): no frames received"),
    ({c: [10.05, 10.1] for c in TOPICS}, 10.1, "observation history not filled: camera 'left'"),
    ({"left": [9.8, 9.9, 10.0], "right": [9.8, 9.9, 10.0], "wrist": [9.78, 9.88, 9.98]}, 10.0,
     "frames not synchronised: camera 'left' (/l) stamp 9.900 s is 0.080 s before camera 'wrist' (/w)"),
    ({"left": [10.5], "right": [10.5], "wrist": [10.0]}, 10.5, "every buffered frame of camera 'left'"),
    ({c: [9.0, 9.1] for c in TOPICS}, 10.0, "frames too old: camera 'left' (/l) frame of the newest set is 0.90 s"),
])
def test_frame_sets_say_why_not(stamps, now, message):
    buffers = filled(stamps)
    with pytest.raises(NotReady) as info:
        buffers.frame_sets(now, 0.1, 2, max_skew_s=0.05, max_age_s=0.5, topics=TOPICS)
    assert message in str(info.value)


def test_health_names_the_camera_and_the_problem():
    buffers = filled({c: [10.0] for c in TOPICS})
    assert buffers.health(10.2, max_age_s=0.5, topics=TOPICS) is None
    assert "camera 'left' (/l): newest frame is 0.60 s old" in buffers.health(10.6, 0.5, TOPICS)
    assert "stamped 0.30 s in the future" in buffers.health(9.7, 0.5, TOPICS)  # the node's clock went back
    buffers.set_problem("right", "unsupported image encoding 'yuv422'")
    assert buffers.health(10.2, 0.5, TOPICS) == "camera 'right' (/r): unsupported image encoding 'yuv422'"
    buffers.add("right", 10.1, None, 10.1)  # a good frame clears it
    assert buffers.health(10.2, 0.5, TOPICS) is None


def test_a_frame_stamped_in_the_future_is_refused_and_cannot_block_the_camera():
    buffers = filled({c: [10.0, 10.1] for c in TOPICS})
    refused = buffers.add("left", 3610.13, "bad", now_s=10.13)  # an hour ahead: another clock
    assert "stamped 3600.00 s in the future" in refused and "max_future_stamp_s=0.1" in refused
    assert buffers._stamps["left"][-1] == 10.1  # not stored
    assert "camera 'left' (/l): frame stamped 3600.00 s in the future" in buffers.health(10.15, 0.5, TOPICS)
    for stamp in (10.133, 10.166, 10.2):  # the good frames after it are used at once
        for cam in TOPICS:
            assert buffers.add(cam, stamp, (cam, stamp), now_s=stamp + 0.005) is None
    assert buffers.health(10.21, 0.5, TOPICS) is None
    assert buffers.frame_sets(10.21, 0.1, 2, 0.05, 0.5, TOPICS).stamps[-1]["left"] == 10.2
    assert buffers.add("left", 10.25, "slightly ahead", now_s=10.2) is None  # within the tolerance: kept


def test_frames_are_pruned_by_the_time_they_arrive():
    buffers = filled({"left": [1.0, 1.5]}, keep_s=1.0)
    buffers.add("left", 1.6, "x", now_s=5.0)  # late: everything older than now - keep_s goes
    assert buffers._stamps["left"] == []


def chunk(chunk_id, motion_at_request, latency=0.05):
    actions = np.arange(16, dtype=np.float32)[:, None] + 100 * chunk_id  # row i of chunk c: 100 c + i
    return Chunk(np.repeat(actions, 7, axis=1), chunk_id, motion_at_request, latency)


def run(scheduler, ticks, latency_ticks):
    """Tick the scheduler with inference taking ``latency_ticks`` ticks; return the executed (chunk, index)."""
    executed, pending, next_id = [], None, 1
    for tick in range(ticks):
        if pending is not None and tick >= pending[0]:
            scheduler.offer(pending[1])
            pending = None
        if scheduler.should_request(pending is not None):
            pending = (tick + latency_ticks, chunk(next_id, scheduler.motion_ticks, latency_ticks * 0.1))
            next_id += 1
        action = scheduler.next_action()
        if action is not None:
            executed.append((int(action[0]) // 100, int(action[0]) % 100))
            scheduler.executed()
        else:
            executed.append(None)
    return executed


def test_fast_inference_executes_the_first_execute_steps_actions_of_each_chunk():
    scheduler = ChunkScheduler(execute_steps=8, period_s=0.1, margin_s=0.0, initial_latency_s=0.05)
    executed = run(scheduler, 30, latency_ticks=1)
    assert scheduler.lead_ticks == 1
    moving = [e for e in executed if e is not None]
    assert executed[0] is None  # the first chunk is being computed
    # chunk 1 from action 0; each next one, requested one tick early, starts at action 1
    assert moving[:8] == [(1, i) for i in range(8)]
    assert moving[8:15] == [(2, i) for i in range(1, 8)]
    assert moving[15:22] == [(3, i) for i in range(1, 8)]
    assert None not in executed[1:]  # no stall between chunks
    assert scheduler.actions_skipped == scheduler.chunks_used - 1


def test_slow_inference_skips_the_actions_whose_ticks_passed():
    scheduler = ChunkScheduler(execute_steps=8, period_s=0.1, margin_s=0.05, initial_latency_s=0.3)
    executed = run(scheduler, 40, latency_ticks=3)
    assert scheduler.lead_ticks == 4  # ceil((0.3 + 0.05) / 0.1)
    moving = [e for e in executed if e is not None]
    assert moving[:8] == [(1, i) for i in range(8)]
    assert moving[8:12] == [(2, i) for i in range(4, 8)]  # requested 4 ticks early: actions 0..3 passed
    assert None not in executed[executed.index((1, 0)):]


def test_latency_longer_than_the_execution_window_falls_back_to_synchronous():
    scheduler = ChunkScheduler(execute_steps=8, period_s=0.1, margin_s=0.05, initial_latency_s=1.2)
    executed = run(scheduler, 60, latency_ticks=12)
    assert scheduler.lead_ticks == 0
    moving = [e for e in executed if e is not None]
    # whole windows from action 0: the robot held still while each chunk was computed
    assert moving[:16] == [(1, i) for i in range(8)] + [(2, i) for i in range(8)]
    assert scheduler.actions_skipped == 0


def test_a_chunk_whose_whole_window_passed_is_dropped():
    scheduler = ChunkScheduler(execute_steps=4, period_s=0.1, margin_s=0.0, initial_latency_s=0.1)
    scheduler.offer(chunk(1, motion_at_request=0))
    for _ in range(4):
        scheduler.next_action()
        scheduler.executed()
    scheduler.offer(chunk(2, motion_at_request=0))  # observed before all 4 motion ticks
    assert scheduler.next_action() is None and scheduler.chunks_stale == 1


MS = 1_000_000


def served(grid, tick_times_ms):
    """The slot stamps (ms) each tick served, None for a tick that did nothing."""
    return [None if (stamp := grid.claim(5_000 * MS + t * MS)) is None else stamp // MS - 5_000
            for t in tick_times_ms]


def test_ticks_on_time_serve_one_slot_each():
    grid = TickGrid(0.1, 5_000 * MS)
    assert served(grid, [100, 200, 300.05, 400]) == [100, 200, 300, 400]
    assert grid.bunched == 0


def test_a_late_tick_is_never_followed_by_a_burst():
    # the timer callback of slot 1 ran at 190 ms (a starved executor), slot 2's on time at 200 ms:
    # the action goes out at 190 ms and the next one a period later, never 10 ms apart
    grid = TickGrid(0.1, 5_000 * MS)
    assert served(grid, [190, 200, 300, 400]) == [100, None, 300, 400]
    assert grid.bunched == 1
    # slightly late ticks still act: the executor's jitter is not a reason to hold
    grid = TickGrid(0.1, 5_000 * MS)
    assert served(grid, [130, 200, 340, 400]) == [100, 200, 300, 400]


def test_consistently_late_ticks_keep_the_period():
    grid = TickGrid(0.1, 5_000 * MS)
    assert served(grid, [160, 260, 360, 460]) == [100, 200, 300, 400]
    assert grid.bunched == 0


def test_a_clock_jumping_back_restarts_the_grid():
    grid = TickGrid(0.1, 5_000 * MS)
    assert served(grid, [100, 200, 300, 100, 200]) == [100, 200, 300, 100, 200]


def test_a_bunched_tick_is_not_a_tick_of_motion():
    # the schedule shifts instead of skipping an action: the late tick's action and the next
    # on-time tick's are consecutive actions of the chunk
    grid, scheduler = TickGrid(0.1, 0), ChunkScheduler(8, 0.1, 0.0, 0.01)
    scheduler.offer(Chunk(np.arange(16.0)[:, None], 1, 0, 0.01))
    executed = []
    for t in [100, 290, 300, 400]:
        if grid.claim(t * MS) is not None:
            executed.append(scheduler.next_action()[0])
            scheduler.executed()
    assert executed == [0.0, 1.0, 2.0] and scheduler.actions_skipped == 0


def test_a_failing_model_is_a_one_line_fault_naming_where():
    from uwm_ros.policy.inference_worker import InferenceJob, InferenceWorker

    def predict(images, job):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details on the next lines")

    worker = InferenceWorker(predict, lambda observation: {}, lambda: 0.0)
    try:
        result = worker._infer(InferenceJob(observation=None, job_id=1, generation=0, requested_at_s=0.0,
                                            motion_at_request=0, state=None))
    finally:
        worker.stop(1.0)
    assert result.actions is None and "\n" not in result.fault
    assert result.fault.startswith("inference failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "(in predict, test_sync_and_scheduling.py:" in result.fault


def test_camera_topics_must_name_the_checkpoint_cameras_in_order():
    cameras = ["left", "right", "wrist"]
    assert camera_topic_mismatch(cameras, ["/cameras/left/image_raw", "/cameras/right/image_raw",
                                           "/wrist_camera/color/image_raw/compressed"]) is None
    swapped = camera_topic_mismatch(cameras, ["/cameras/right/image_raw", "/cameras/left/image_raw", "/cam/wrist"])
    assert "not in the checkpoint's camera order ['left', 'right', 'wrist']" in swapped
    assert "/cameras/right/image_raw (given for camera 'left') is camera 'right'" in swapped
    renamed = camera_topic_mismatch(["front", "side", "wrist"], ["/cameras/left/image_raw", "/cameras/right/image_raw",
                                                                 "/cameras/wrist/image_raw"])
    assert "does not name the checkpoint's camera 'front'" in renamed and "check_camera_names:=false" in renamed
