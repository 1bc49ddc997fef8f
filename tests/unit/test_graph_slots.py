"""The Graph client's ranked concurrency limit: a freed slot goes to the waiting request of
the lowest rank, in arrival order within a rank, and a cancelled waiter loses no slot."""

from __future__ import annotations

import asyncio

from monitors.graph.slots import RankedSlots, ranked


async def _hold(slots: RankedSlots, name: str, order: list[str], release: asyncio.Event) -> None:
    async with slots:
        order.append(name)
        await release.wait()


def test_a_freed_slot_goes_to_the_lowest_rank_then_to_the_earliest_arrival() -> None:
    async def main() -> list[str]:
        slots, order, release = RankedSlots(1), [], asyncio.Event()
        first = asyncio.ensure_future(_hold(slots, "first", order, release))
        await asyncio.sleep(0)
        waiting = []
        for name, rank in [("late-a", 2), ("soon-a", 0), ("late-b", 2), ("soon-b", 0)]:
            with ranked(rank):
                waiting.append(asyncio.ensure_future(_hold(slots, name, order, release)))
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *waiting)
        return order

    assert asyncio.run(main()) == ["first", "soon-a", "soon-b", "late-a", "late-b"]


def test_tasks_started_inside_ranked_wait_with_its_rank() -> None:
    async def main() -> list[str]:
        slots, order, release = RankedSlots(1), [], asyncio.Event()
        first = asyncio.ensure_future(_hold(slots, "first", order, release))
        await asyncio.sleep(0)

        async def later_chunk() -> None:
            with ranked(5):
                await asyncio.gather(*(_hold(slots, f"ahead-{n}", order, release) for n in (1, 2)))

        ahead = asyncio.ensure_future(later_chunk())
        await asyncio.sleep(0)
        now = asyncio.ensure_future(_hold(slots, "current", order, release))  # rank 0
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, ahead, now)
        return order

    assert asyncio.run(main()) == ["first", "current", "ahead-1", "ahead-2"]


def test_no_more_than_size_hold_a_slot_at_once() -> None:
    async def main() -> int:
        slots, most, holding = RankedSlots(3), [0], [0]

        async def one(rank: int) -> None:
            with ranked(rank):
                async with slots:
                    holding[0] += 1
                    most[0] = max(most[0], holding[0])
                    await asyncio.sleep(0.001)
                    holding[0] -= 1

        await asyncio.gather(*(one(n % 4) for n in range(40)))
        return most[0]

    assert asyncio.run(main()) == 3


def test_a_cancelled_waiter_leaves_its_slot_to_the_next() -> None:
    async def main() -> list[str]:
        slots, order, release = RankedSlots(1), [], asyncio.Event()
        first = asyncio.ensure_future(_hold(slots, "first", order, release))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(_hold(slots, "gone", order, release))
        kept = asyncio.ensure_future(_hold(slots, "kept", order, release))
        await asyncio.sleep(0)
        gone.cancel()
        release.set()
        await asyncio.wait_for(asyncio.gather(first, kept), 2)
        await asyncio.gather(gone, return_exceptions=True)
        # the slot is free again: a newcomer takes it at once
        async with slots:
            order.append("after")
        return order

    assert asyncio.run(main()) == ["first", "kept", "after"]


def test_a_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    async def main() -> list[str]:
        slots, order, release = RankedSlots(1), [], asyncio.Event()
        await slots.__aenter__()
        handed = asyncio.ensure_future(_hold(slots, "handed", order, release))
        after = asyncio.ensure_future(_hold(slots, "after", order, release))
        await asyncio.sleep(0)
        await slots.__aexit__(None, None, None)  # the slot is handed to "handed"...
        handed.cancel()  # ...which is cancelled before it runs
        release.set()
        await asyncio.gather(handed, return_exceptions=True)
        await asyncio.wait_for(after, 2)  # a lost slot would leave it waiting for ever
        return order

    assert asyncio.run(main()) == ["after"]
