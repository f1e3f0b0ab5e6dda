"""The daemon thread pool that runs sync step handlers."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

from flux.engine._threads import StepThreads


def test_runs_work_on_named_daemon_threads_up_to_the_limit() -> None:
    pool = StepThreads(max_workers=2, name="flux-step")
    release = threading.Event()
    started = threading.Barrier(3)

    def blocked() -> str:
        started.wait(timeout=10)
        release.wait(timeout=10)
        thread = threading.current_thread()
        return f"{thread.name} {thread.daemon}"

    first, second = pool.submit(blocked), pool.submit(blocked)
    started.wait(timeout=10)  # both run at once: two threads
    third = pool.submit(lambda: threading.current_thread().name)  # waits for a free thread
    assert not third.done()
    release.set()
    assert sorted([first.result(10), second.result(10)]) == ["flux-step_0 True", "flux-step_1 True"]
    assert third.result(10) in {"flux-step_0", "flux-step_1"}
    pool.shutdown()


def test_errors_reach_the_caller_and_idle_threads_are_reused() -> None:
    pool = StepThreads(max_workers=4, name="t")

    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        pool.submit(fail).result(10)
    names = {pool.submit(lambda: threading.current_thread().name).result(10) for _ in range(5)}
    assert names == {"t_0"}  # one after the other: the idle thread takes each call
    pool.shutdown()


def test_shutdown_cancels_queued_work_and_refuses_new_work() -> None:
    pool = StepThreads(max_workers=1, name="t")
    release = threading.Event()
    running = pool.submit(release.wait, 10)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(CancelledError):
        queued.result(10)
    with pytest.raises(RuntimeError, match="the engine was closed"):
        pool.submit(lambda: None)
    release.set()
    assert running.result(10) is True
