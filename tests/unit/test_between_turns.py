"""Long loops a slice at a time: every item once, in order, and the event loop's other tasks
running between two slices."""

from __future__ import annotations

import asyncio

from monitors.aio import between_turns


def test_every_item_comes_once_in_order_in_slices_of_the_size_asked() -> None:
    async def main() -> tuple[list[list[int]], list[list[int]]]:
        parts = [list(part) async for part in between_turns(list(range(23)), 10)]
        empty = [list(part) async for part in between_turns([], 10)]
        return parts, empty

    parts, empty = asyncio.run(main())
    assert parts == [list(range(10)), list(range(10, 20)), list(range(20, 23))]
    assert empty == []


def test_other_tasks_run_between_two_slices() -> None:
    async def main() -> list[int]:
        ticks: list[int] = []

        async def ticker() -> None:
            while True:
                ticks.append(1)
                await asyncio.sleep(0)

        running = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        seen = []
        try:
            async for _ in between_turns(list(range(6)), 2):
                seen.append(len(ticks))
        finally:
            running.cancel()
        return seen

    seen = asyncio.run(main())
    assert len(seen) == 3
    assert seen[0] < seen[1] < seen[2]
