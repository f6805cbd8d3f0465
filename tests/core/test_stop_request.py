"""StopRequest: Ctrl-C / SIGTERM become a request the main loop polls; a second Ctrl-C aborts."""
import signal

import pytest

from uwm_core.stop_request import StopRequest


def test_a_signal_is_recorded_not_raised_and_a_second_ctrl_c_aborts():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    announced = []
    stop = StopRequest(announced.append)
    try:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM" and announced == ["SIGTERM"]
        signal.raise_signal(signal.SIGTERM)  # a repeated SIGTERM (a launcher escalating) asks again, no more
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.close()
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_first_ctrl_c_raises_nothing():
    stop = StopRequest()
    try:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
    finally:
        stop.close()
