"""streams.tasks.stop_tasks: a task that swallowed a cancellation still stops."""

from __future__ import annotations

import asyncio

import pytest

from streams.tasks import stop_tasks


async def _looping_on_wait_for(rounds: list[int], cancel_with_reply: list[asyncio.Task[None]]) -> None:
    """What a loop of NATS requests does: each round waits on a reply through
    ``asyncio.wait_for`` (nats-py's request), the reply a moment later.  The
    first reply comes in the same loop pass as a ``cancel()`` of the task."""
    loop = asyncio.get_running_loop()

    def answer(reply: asyncio.Future[int]) -> None:
        reply.set_result(1)
        if cancel_with_reply:
            cancel_with_reply.pop().cancel()

    while True:
        reply: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.001, answer, reply)
        await asyncio.wait_for(reply, 10)
        rounds.append(1)


async def test_a_cancellation_lost_in_wait_for_does_not_keep_the_task_alive() -> None:
    rounds: list[int] = []
    cancel_with_reply: list[asyncio.Task[None]] = []
    task = asyncio.create_task(_looping_on_wait_for(rounds, cancel_with_reply))
    cancel_with_reply.append(task)
    await asyncio.sleep(0.1)
    swallowed = not task.done()  # 3.11: wait_for returned the reply, the loop went on
    seen = len(rounds)
    async with asyncio.timeout(5):
        await stop_tasks(task)
    assert task.cancelled()
    if swallowed:  # (3.11, every time; 3.12+ the first cancel is enough)
        assert seen > 1


async def test_failures_are_raised_once_all_have_ended() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    async def sleeps() -> None:
        await asyncio.sleep(60)

    failing, sleeping = asyncio.create_task(fails()), asyncio.create_task(sleeps())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await stop_tasks(failing, None, sleeping)
    assert sleeping.cancelled()


async def test_done_and_absent_tasks_are_fine() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await stop_tasks(done, None)
    await stop_tasks()
