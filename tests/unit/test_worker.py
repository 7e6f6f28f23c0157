"""The daemon's build worker: a spawned process fed through a pipe (resolverd/daemon/worker.py)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from resolverd.daemon.build import Built, Failed, Job
from resolverd.daemon.worker import BuildWorker

from ..publishing import first_kite_job


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return first_kite_job(tmp_path)


@pytest.fixture
def worker() -> BuildWorker:
    started = BuildWorker()
    yield started  # type: ignore[misc]
    started.stop()


def mapped_semaphores(pid: int) -> list[str]:
    return [line for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/sem." in line]


def test_a_build_runs_in_one_worker_process_that_holds_no_named_semaphore(
    worker: BuildWorker, job: Job
) -> None:
    async def two_builds() -> tuple[Built | Failed, int | None, Built | Failed, int | None]:
        first = await worker.build(job)
        pid = worker.pid
        return first, pid, await worker.build(job), worker.pid

    first, pid, second, again = asyncio.run(two_builds())
    assert isinstance(first, Built) and first.instruments == 1
    assert isinstance(second, Built)
    assert pid is not None and pid != os.getpid()
    assert again == pid  # one worker serves build after build
    # A ProcessPoolExecutor's queues would be sem.mp-* files in /dev/shm, mapped by both.
    assert mapped_semaphores(pid) == mapped_semaphores(os.getpid()) == []


def test_a_worker_that_died_between_builds_is_replaced(worker: BuildWorker, job: Job) -> None:
    async def kill_between() -> tuple[int | None, Built | Failed, int | None]:
        assert isinstance(await worker.build(job), Built)
        first = worker.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        os.waitid(os.P_PID, first, os.WEXITED | os.WNOWAIT)  # dead, every thread, not reaped
        return first, await worker.build(job), worker.pid

    first, result, second = asyncio.run(kill_between())
    assert isinstance(result, Built)
    assert second not in (None, first)


def test_a_worker_killed_during_a_build_fails_it_as_internal(worker: BuildWorker, job: Job) -> None:
    async def kill_during() -> tuple[Built | Failed, Built | Failed]:
        building = asyncio.ensure_future(worker.build(job))
        while worker.pid is None:
            await asyncio.sleep(0)
        os.kill(worker.pid, signal.SIGKILL)  # before it can have loaded Python and answered
        return await building, await worker.build(job)

    killed, next_one = asyncio.run(kill_during())
    assert isinstance(killed, Failed)
    assert (killed.reason, killed.exit_code) == ("internal", 70)
    assert killed.error == "the build worker died (exit code -9)"
    assert isinstance(next_one, Built)
