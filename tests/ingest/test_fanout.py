"""Live fan-out: bounded subscriptions, in-memory delivery, Redis between processes."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis

from ingest.fanout import (
    FanOutError,
    FanOutUnavailableError,
    InMemoryFanOut,
    LiveMessage,
    RedisFanOut,
    SlowSubscriberError,
    Subscription,
    central_topic,
    patient_topic,
)

TIMEOUT_S = 5.0


def run(coro: Awaitable[None]) -> None:
    """Run a test coroutine with a bound on its duration."""

    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT_S * 3):
            await coro

    asyncio.run(bounded())


def trace(i: int) -> LiveMessage:
    return LiveMessage.encode("patient/1", {"type": "trace", "seq": i})


def alarm(i: int) -> LiveMessage:
    return LiveMessage.encode("patient/1", {"type": "alarm", "id": i})


async def drain(subscription: Subscription) -> list[dict[str, object]]:
    """Every message queued now, decoded."""
    out = []
    while subscription.qsize():
        out.append((await subscription.get()).data())
    return out


class TestLiveMessage:
    def test_basic(self) -> None:
        message = LiveMessage.encode("central/3", {"type": "trace", "values": [[0.1]]})
        assert (message.topic, message.kind, message.droppable) == ("central/3", "trace", True)
        assert message.data() == {"type": "trace", "values": [[0.1]]}
        assert not alarm(1).droppable
        assert (patient_topic(4), central_topic(4)) == ("patient/4", "central/4")

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="string `type`"):
            LiveMessage.encode("t", {"kind": "trace"})
        with pytest.raises(ValueError, match="not JSON compliant"):
            LiveMessage.encode("t", {"type": "trace", "v": math.nan})
        with pytest.raises(TypeError, match="JSON object"):
            LiveMessage("t", "x", "[1]").data()


class TestSubscription:
    def test_basic(self) -> None:
        async def scenario() -> None:
            subscription = Subscription(["patient/1"], maxsize=4)
            for i in range(3):
                assert subscription.offer(trace(i))
            assert [m["seq"] for m in await drain(subscription)] == [0, 1, 2]
            subscription.close()
            assert [m async for m in subscription] == []

        run(scenario())

    def test_edge_cases(self) -> None:
        """A full queue sheds the oldest trace first and keeps alarms."""

        async def scenario() -> None:
            subscription = Subscription(["patient/1"], maxsize=3)
            for message in (trace(0), alarm(1), trace(2), trace(3), alarm(4)):
                subscription.offer(message)
            kept = await drain(subscription)
            assert [(m["type"], m.get("seq", m.get("id"))) for m in kept] == [
                ("alarm", 1),
                ("trace", 3),
                ("alarm", 4),
            ]
            assert subscription.dropped == 2
            # Full of alarms: a new trace is dropped, the subscription survives.
            for i in range(3):
                subscription.offer(alarm(i))
            assert not subscription.offer(trace(9))
            assert not subscription.overflowed
            # Queued messages are still read after a normal close.
            subscription.close()
            assert not subscription.offer(alarm(5))
            assert len([m async for m in subscription]) == 3

        run(scenario())

    def test_exceptions(self) -> None:
        async def scenario() -> None:
            closed: list[Subscription] = []
            subscription = Subscription(["patient/1"], maxsize=2, on_close=closed.append)
            for i in range(3):
                subscription.offer(alarm(i))
            assert subscription.overflowed
            assert subscription.closed
            assert closed == [subscription]
            with pytest.raises(SlowSubscriberError, match="fell more than 2 messages behind"):
                await subscription.get()

        run(scenario())
        with pytest.raises(ValueError, match="`maxsize` must be at least 1"):
            Subscription(["t"], maxsize=0)

    def test_waits_for_a_message(self) -> None:
        async def scenario() -> None:
            subscription = Subscription(["patient/1"])
            getter = asyncio.create_task(subscription.get())
            await asyncio.sleep(0)
            assert not getter.done()
            subscription.offer(alarm(7))
            assert (await getter).data()["id"] == 7

        run(scenario())


class TestInMemoryFanOut:
    def test_basic(self) -> None:
        async def scenario() -> None:
            fanout = InMemoryFanOut()
            one = await fanout.subscribe([patient_topic(1)])
            both = await fanout.subscribe([patient_topic(1), central_topic(2)])
            fanout.publish(patient_topic(1), {"type": "vitals", "spo2": 97})
            fanout.publish(central_topic(2), {"type": "trace", "seq": 0})
            fanout.publish(patient_topic(3), {"type": "vitals", "spo2": 90})  # nobody listens
            assert [m["type"] for m in await drain(one)] == ["vitals"]
            assert [m["type"] for m in await drain(both)] == ["vitals", "trace"]
            assert fanout.stats() == {"subscribers": 2, "published": 3, "dropped": 0, "queued": 0}
            one.close()
            assert fanout.topic_counts() == {patient_topic(1): 1, central_topic(2): 1}
            await fanout.aclose()
            assert [m async for m in both] == []
            assert fanout.topic_counts() == {}

        run(scenario())

    def test_edge_cases(self) -> None:
        """A subscriber that never reads neither blocks publishing nor starves the others."""

        async def scenario() -> None:
            fanout = InMemoryFanOut()
            stalled = await fanout.subscribe([patient_topic(1)], maxsize=8)
            reader = await fanout.subscribe([patient_topic(1)], maxsize=100_000)
            for i in range(10_000):
                fanout.publish(patient_topic(1), {"type": "trace", "seq": i})
            fanout.publish(patient_topic(1), {"type": "alarm", "id": 1})
            assert stalled.qsize() == 8
            assert stalled.dropped == 10_000 - 7
            assert (await drain(stalled))[-1] == {"type": "alarm", "id": 1}
            assert reader.qsize() == 10_001
            assert reader.dropped == 0
            assert fanout.stats()["dropped"] == 10_000 - 7

        run(scenario())

    def test_exceptions(self) -> None:
        async def scenario() -> None:
            fanout = InMemoryFanOut()
            with pytest.raises(ValueError, match="at least one topic"):
                await fanout.subscribe([])
            lagging = await fanout.subscribe([patient_topic(1)], maxsize=1)
            fanout.publish(patient_topic(1), {"type": "alarm", "id": 1})
            fanout.publish(patient_topic(1), {"type": "alarm", "id": 2})
            with pytest.raises(SlowSubscriberError, match="fell more than 1 messages behind"):
                await lagging.get()
            assert fanout.topic_counts() == {}  # cut off and removed
            assert fanout.stats()["subscribers"] == 0

        run(scenario())


def with_redis(redis_url: str, test: Callable[[RedisFanOut, RedisFanOut], Awaitable[None]]) -> None:
    """Run ``test`` with two started Redis fan-outs (two "processes") on a fresh channel prefix."""

    async def scenario() -> None:
        prefix = f"cm-test-{uuid.uuid4().hex}:"
        publisher = await RedisFanOut(redis_url, prefix=prefix).start()
        subscriber = await RedisFanOut(redis_url, prefix=prefix).start()
        try:
            await test(publisher, subscriber)
        finally:
            await publisher.aclose()
            await subscriber.aclose()

    run(scenario())


class TestRedisFanOut:
    def test_basic(self, redis_url: str) -> None:
        async def test(publisher: RedisFanOut, subscriber: RedisFanOut) -> None:
            subscription = await subscriber.subscribe([patient_topic(1)])
            local = await publisher.subscribe([patient_topic(1)])
            publisher.publish(patient_topic(1), {"type": "vitals", "spo2": 95})
            publisher.publish(patient_topic(2), {"type": "vitals", "spo2": 80})
            publisher.publish(patient_topic(1), {"type": "alarm", "id": 3})
            async with asyncio.timeout(TIMEOUT_S):
                received = [(await subscription.get()).data() for _ in range(2)]
                looped = (await local.get()).data()
            assert received == [{"type": "vitals", "spo2": 95}, {"type": "alarm", "id": 3}]
            assert looped == {"type": "vitals", "spo2": 95}
            await publisher.flush()
            assert publisher.stats()["published"] == 3
            assert subscriber.stats()["subscribers"] == 1

        with_redis(redis_url, test)

    def test_edge_cases(self, redis_url: str) -> None:
        """Channels are shared by local subscribers and released by the last one."""

        async def test(publisher: RedisFanOut, subscriber: RedisFanOut) -> None:
            channel = subscriber.prefix + patient_topic(5)
            first = await subscriber.subscribe([patient_topic(5)])
            second = await subscriber.subscribe([patient_topic(5)])
            client = redis.asyncio.Redis.from_url(redis_url)
            try:
                assert (await client.pubsub_numsub(channel))[0][1] == 1
                publisher.publish(patient_topic(5), {"type": "beat", "label": "N"})
                async with asyncio.timeout(TIMEOUT_S):
                    assert (await first.get()).kind == (await second.get()).kind == "beat"
                first.close()
                second.close()
                async with asyncio.timeout(TIMEOUT_S):
                    while (await client.pubsub_numsub(channel))[0][1]:
                        await asyncio.sleep(0.01)
            finally:
                await client.aclose()

        with_redis(redis_url, test)

    def test_exceptions(self) -> None:
        async def scenario() -> None:
            with pytest.raises(FanOutUnavailableError, match="does not answer"):
                await RedisFanOut("redis://127.0.0.1:1/0", timeout_s=1.0).start()
            with pytest.raises(FanOutError, match="start"):
                await RedisFanOut().subscribe([patient_topic(1)])

        run(scenario())
