"""BatchWriter: group commit without a timer."""

import asyncio

import pytest

from obskit.testing import wait_for_async
from orderflow.batching import BatchWriter


async def _writer(batches: list[list[int]], *, max_items: int = 200,
                  fail: bool = False) -> BatchWriter[int]:
    async def flush(items: list[int]) -> None:
        batches.append(items)
        await asyncio.sleep(0.01)  # a transaction's round trips: items arrive meanwhile
        if fail:
            raise RuntimeError("database gone")

    writer: BatchWriter[int] = BatchWriter("test", flush, max_items=max_items)
    writer.start()
    return writer


async def test_items_submitted_during_a_write_form_the_next_batch() -> None:
    batches: list[list[int]] = []
    writer = await _writer(batches)
    first = asyncio.create_task(writer.submit(0))
    # The first batch (0 alone) is being written.
    await wait_for_async(lambda: batches, timeout=2, interval=0, what="the first flush")
    await asyncio.gather(first, *(writer.submit(i) for i in range(1, 64)))
    await writer.stop()
    assert batches == [[0], list(range(1, 64))]


async def test_a_burst_is_one_batch_up_to_max_items_in_order() -> None:
    batches: list[list[int]] = []
    writer = await _writer(batches, max_items=50)
    await asyncio.gather(*(writer.submit(i) for i in range(120)))
    await writer.stop()
    assert batches == [list(range(0, 50)), list(range(50, 100)), list(range(100, 120))]


async def test_a_failed_batch_fails_every_submitter_and_the_writer_goes_on() -> None:
    batches: list[list[int]] = []
    writer = await _writer(batches, fail=True)
    results = await asyncio.gather(*(writer.submit(i) for i in range(3)),
                                   return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError] * 3
    with pytest.raises(RuntimeError, match="database gone"):
        await writer.submit(3)  # the next batch is written (and fails) too
    await writer.stop()
    assert batches == [[0, 1, 2], [3]]
