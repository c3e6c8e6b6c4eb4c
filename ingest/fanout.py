"""Live fan-out: publish monitoring events to topics, subscribe with bounded queues.

The ingest server publishes what browsers watch (display trace, beats,
vitals, alarm changes) to topics, one per patient and view
(:func:`patient_topic`, :func:`central_topic`); each ``/live`` connection
subscribes to the topics its token allows. :class:`FanOut` is the small
interface between the two, so that the broker can change without the server
noticing:

* :class:`InMemoryFanOut` delivers within one process (the embedded
  default);
* :class:`RedisFanOut` carries the events between processes through Redis
  pub/sub, so that several ingest processes behind a load balancer serve
  every browser.

Publishing never blocks and never waits for a subscriber: every subscriber
has a bounded queue (:class:`Subscription`). When a subscriber falls behind,
its queue first sheds the oldest display-trace messages (the trace is
decimated, beats and alarms are kept); when it is full of messages that may
not be dropped, the subscriber is cut off (:class:`SlowSubscriberError`) and
the ``/live`` handler closes its connection. A slow browser therefore never
stalls ingest, and never silently misses an alarm.

Messages are JSON objects with a ``type`` (``"trace"``, ``"beat"``,
``"vitals"``, ``"alarm"``, ...); each is encoded once, whatever the number of
subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import redis.asyncio
import redis.exceptions

__all__ = [
    "DROPPABLE_KINDS",
    "FanOut",
    "FanOutError",
    "FanOutUnavailableError",
    "InMemoryFanOut",
    "LiveMessage",
    "RedisFanOut",
    "SlowSubscriberError",
    "Subscription",
    "central_topic",
    "patient_topic",
]

logger = logging.getLogger(__name__)

#: Message types a lagging subscriber may lose: the display trace, which the
#: next message supersedes. Everything else (beats, vitals, alarms) is kept.
DROPPABLE_KINDS: frozenset[str] = frozenset({"trace"})

#: Default bound of a subscriber's queue, in messages.
DEFAULT_QUEUE_SIZE = 256


class FanOutError(Exception):
    """Base class of the fan-out's errors."""


class SlowSubscriberError(FanOutError):
    """A subscriber fell so far behind that messages it must not miss were refused."""


class FanOutUnavailableError(FanOutError):
    """The broker cannot be reached."""


def patient_topic(patient_id: int) -> str:
    """Topic of one patient's full-rate view."""
    return f"patient/{patient_id}"


def central_topic(patient_id: int) -> str:
    """Topic of one patient's share of the central view (decimated trace)."""
    return f"central/{patient_id}"


@dataclass(frozen=True)
class LiveMessage:
    """One published event, encoded once.

    Attributes
    ----------
    topic : str
        Where it was published.
    kind : str
        The message's ``type``.
    text : str
        The JSON object, as sent to browsers.
    """

    topic: str
    kind: str
    text: str

    @classmethod
    def encode(cls, topic: str, message: Mapping[str, Any]) -> LiveMessage:
        """Encode ``message`` (a JSON object with a string ``type``) for ``topic``.

        Raises
        ------
        ValueError
            If the message has no string ``type`` or holds NaN or infinity.
        """
        kind = message.get("type")
        if not isinstance(kind, str):
            raise ValueError(f"a live message needs a string `type`, got {kind!r}")
        return cls(topic, kind, json.dumps(message, separators=(",", ":"), allow_nan=False))

    @property
    def droppable(self) -> bool:
        """Whether a lagging subscriber may lose this message."""
        return self.kind in DROPPABLE_KINDS

    def data(self) -> dict[str, Any]:
        """The message as a dict (decoded anew on every call)."""
        obj = json.loads(self.text)
        if not isinstance(obj, dict):
            raise TypeError(f"a live message must be a JSON object, got {type(obj).__name__}")
        return obj


class Subscription:
    """A bounded queue of the messages of some topics, read by one consumer.

    Iterate it (``async for message in subscription``) or call :meth:`get`.
    Iteration ends when the subscription is closed; it raises
    :class:`SlowSubscriberError` if the subscription was cut off because it
    lagged.

    Parameters
    ----------
    topics : iterable of str
        The topics it receives.
    maxsize : int
        Most messages held; see the module docstring for what happens when
        it is full.
    on_close : callable, optional
        Called once with the subscription when it closes.
    """

    def __init__(
        self,
        topics: Iterable[str],
        maxsize: int = DEFAULT_QUEUE_SIZE,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"`maxsize` must be at least 1, got {maxsize}")
        self.topics = frozenset(topics)
        self.maxsize = maxsize
        self.dropped = 0
        self.overflowed = False
        self._items: deque[LiveMessage] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        """Whether no more messages will be queued."""
        return self._closed

    def qsize(self) -> int:
        """Messages waiting to be read."""
        return len(self._items)

    def offer(self, message: LiveMessage) -> bool:
        """Queue ``message`` without waiting; ``False`` if it was not queued.

        A full queue first drops its oldest droppable message; if it holds
        none, a droppable ``message`` is dropped itself, and any other
        message cuts the subscriber off.
        """
        if self._closed:
            return False
        if len(self._items) >= self.maxsize and not self._evict_droppable():
            if message.droppable:
                self.dropped += 1
                return False
            self.overflowed = True
            self.close()
            return False
        self._items.append(message)
        self._ready.set()
        return True

    async def get(self) -> LiveMessage:
        """The next message, waiting for one.

        Raises
        ------
        StopAsyncIteration
            When the subscription is closed and drained.
        SlowSubscriberError
            When it was cut off for lagging.
        """
        while not self._items:
            if self.overflowed:
                raise SlowSubscriberError(
                    f"subscriber of {sorted(self.topics)} fell more than {self.maxsize} messages behind"
                )
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        """Stop receiving; queued messages can still be read (not after overflow)."""
        if self._closed:
            return
        self._closed = True
        if self.overflowed:
            self._items.clear()
        self._ready.set()
        if self._on_close is not None:
            self._on_close(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LiveMessage:
        return await self.get()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _evict_droppable(self) -> bool:
        for index, old in enumerate(self._items):
            if old.droppable:
                del self._items[index]
                self.dropped += 1
                return True
        return False


class FanOut(Protocol):
    """Publish events to topics; subscribe to topics with a bounded queue."""

    def publish(self, topic: str, message: Mapping[str, Any]) -> None:
        """Publish a JSON object to ``topic``; never blocks, never raises for slow subscribers."""
        ...

    async def subscribe(self, topics: Iterable[str], *, maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        """Subscribe to ``topics``; messages published after this returns are received."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters for the health endpoint: subscribers, published, dropped."""
        ...

    async def aclose(self) -> None:
        """Close every subscription and release the broker connection."""
        ...


class InMemoryFanOut:
    """Fan-out within one process.

    Examples
    --------
    >>> import asyncio
    >>> async def demo() -> str:
    ...     fanout = InMemoryFanOut()
    ...     sub = await fanout.subscribe(["patient/1"])
    ...     fanout.publish("patient/1", {"type": "vitals", "spo2": 97})
    ...     return (await sub.get()).text
    >>> asyncio.run(demo())
    '{"type":"vitals","spo2":97}'
    """

    def __init__(self) -> None:
        self._topics: dict[str, set[Subscription]] = {}
        self._published = 0
        self._dropped_closed = 0  # drops of subscriptions that are gone

    def publish(self, topic: str, message: Mapping[str, Any]) -> None:
        """Encode ``message`` once and queue it for every subscriber of ``topic``."""
        self._published += 1
        if self._topics.get(topic):
            self.deliver(LiveMessage.encode(topic, message))

    def deliver(self, message: LiveMessage) -> None:
        """Queue an encoded message for the subscribers of its topic."""
        for subscription in list(self._topics.get(message.topic, ())):
            subscription.offer(message)

    async def subscribe(self, topics: Iterable[str], *, maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        """Subscribe to ``topics`` (effective at once)."""
        return self.subscribe_now(topics, maxsize=maxsize)

    def subscribe_now(
        self,
        topics: Iterable[str],
        *,
        maxsize: int = DEFAULT_QUEUE_SIZE,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> Subscription:
        """Subscribe synchronously; ``on_close`` runs after the subscription is removed."""

        def release(subscription: Subscription) -> None:
            self._remove(subscription)
            if on_close is not None:
                on_close(subscription)

        subscription = Subscription(topics, maxsize, on_close=release)
        if not subscription.topics:
            raise ValueError("subscribe to at least one topic")
        for topic in subscription.topics:
            self._topics.setdefault(topic, set()).add(subscription)
        return subscription

    def topic_counts(self) -> dict[str, int]:
        """Number of local subscribers of each topic that has any."""
        return {topic: len(subs) for topic, subs in self._topics.items() if subs}

    def stats(self) -> dict[str, int]:
        """Subscribers, published messages, messages dropped for lagging subscribers."""
        subscriptions = {s for subs in self._topics.values() for s in subs}
        return {
            "subscribers": len(subscriptions),
            "published": self._published,
            "dropped": self._dropped_closed + sum(s.dropped for s in subscriptions),
            "queued": sum(s.qsize() for s in subscriptions),
        }

    async def aclose(self) -> None:
        """Close every subscription."""
        for subscription in {s for subs in self._topics.values() for s in subs}:
            subscription.close()

    def _remove(self, subscription: Subscription) -> None:
        self._dropped_closed += subscription.dropped
        for topic in subscription.topics:
            subs = self._topics.get(topic)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._topics[topic]


class RedisFanOut:
    """Fan-out between processes through Redis pub/sub.

    Every topic is a Redis channel ``prefix + topic``. :meth:`publish` queues
    the message in a bounded outbox that a background task sends to Redis
    (pipelined), so publishing never waits for the network. One pub/sub
    connection per process receives the channels that local subscribers
    need and hands each message to them through an :class:`InMemoryFanOut`.

    Parameters
    ----------
    url : str
        Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
    prefix : str
        Channel name prefix, so that several deployments can share a Redis.
    outbox_size : int
        Most messages waiting to be sent; when Redis is slow or away, the
        oldest trace messages go first.
    timeout_s : float
        Connect and subscribe timeout.

    Notes
    -----
    Redis pub/sub delivers at most once: a message published while Redis is
    unreachable is lost. That suits a live view; the stored data and the
    history pages are the record.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "cardiac-monitor:live:",
        outbox_size: int = 10_000,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._local = InMemoryFanOut()
        self._outbox = Subscription(["outbox"], outbox_size)
        self._client: redis.asyncio.Redis | None = None
        self._pubsub: Any = None  # redis.asyncio.client.PubSub (untyped)
        self._refs: dict[str, int] = {}
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._published = 0
        self._send_errors = 0

    async def start(self) -> Self:
        """Connect to Redis and start the sender.

        Raises
        ------
        FanOutUnavailableError
            If Redis does not answer within ``timeout_s``.
        """
        client = redis.asyncio.Redis.from_url(
            self.url, socket_connect_timeout=self.timeout_s, health_check_interval=30
        )
        try:
            await asyncio.wait_for(client.ping(), self.timeout_s)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            await client.aclose()
            raise FanOutUnavailableError(f"Redis at {self.url} does not answer: {exc}") from exc
        self._client = client
        self._pubsub = client.pubsub()
        self._spawn(self._send_loop())
        return self

    def publish(self, topic: str, message: Mapping[str, Any]) -> None:
        """Queue ``message`` for Redis; never waits."""
        self._published += 1
        self._outbox.offer(LiveMessage.encode(topic, message))

    async def subscribe(self, topics: Iterable[str], *, maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        """Subscribe to ``topics``; returns once Redis confirmed every channel.

        Raises
        ------
        FanOutUnavailableError
            If Redis does not confirm within ``timeout_s``.
        """
        if self._pubsub is None:
            raise FanOutError("call RedisFanOut.start() before subscribing")
        subscription = self._local.subscribe_now(topics, maxsize=maxsize, on_close=self._release)
        async with self._lock:
            new = [t for t in subscription.topics if self._refs.get(t, 0) == 0]
            for topic in subscription.topics:
                self._refs[topic] = self._refs.get(topic, 0) + 1
            if new:
                await self._subscribe_channels(new, subscription)
        return subscription

    def stats(self) -> dict[str, int]:
        """Local subscribers, published, dropped (outbox and subscribers), send errors."""
        local = self._local.stats()
        return {
            **local,
            "published": self._published,
            "dropped": local["dropped"] + self._outbox.dropped,
            "outbox": self._outbox.qsize(),
            "send_errors": self._send_errors,
        }

    async def aclose(self) -> None:
        """Close the subscriptions, stop the tasks (unsent messages are lost), close the connections."""
        await self._local.aclose()
        self._outbox.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._client is not None:
            await self._client.aclose()
        self._pubsub = self._client = None

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until the outbox is empty (for tests and orderly shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._outbox.qsize():
                await asyncio.sleep(0.005)

    # Internals ---------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _subscribe_channels(self, topics: list[str], subscription: Subscription) -> None:
        """SUBSCRIBE to ``topics`` and wait for Redis to confirm each."""
        loop = asyncio.get_running_loop()
        waiters = []
        for topic in topics:
            waiter = self._confirmations.get(topic) or loop.create_future()
            self._confirmations[topic] = waiter
            waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._pubsub.subscribe(*(self.prefix + t for t in topics))
                if self._listener is None or self._listener.done():
                    self._listener = self._spawn(self._listen_loop())
                await asyncio.gather(*waiters)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            subscription.close()
            raise FanOutUnavailableError(f"Redis did not confirm the subscription: {exc}") from exc

    def _release(self, subscription: Subscription) -> None:
        """Drop the subscription's references; unsubscribe channels nobody needs."""
        unused = []
        for topic in subscription.topics:
            count = self._refs.get(topic, 0) - 1
            if count <= 0:
                self._refs.pop(topic, None)
                self._confirmations.pop(topic, None)
                unused.append(topic)
            else:
                self._refs[topic] = count
        if unused and self._pubsub is not None and not self._outbox.closed:
            self._spawn(self._unsubscribe(unused))

    async def _unsubscribe(self, topics: list[str]) -> None:
        """UNSUBSCRIBE from channels whose last local subscriber left."""
        async with self._lock:
            still_unused = [t for t in topics if t not in self._refs]
            if still_unused and self._pubsub is not None:
                try:
                    await self._pubsub.unsubscribe(*(self.prefix + t for t in still_unused))
                except (redis.exceptions.RedisError, OSError) as exc:
                    logger.warning("Redis unsubscribe failed: %s", exc)

    async def _listen_loop(self) -> None:
        """Receive pub/sub messages and deliver them to local subscribers."""
        backoff = 0.1
        while True:
            try:
                item = await self._pubsub.get_message(timeout=None)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                logger.warning("Redis pub/sub connection lost (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if item is not None:
                self._handle(item)

    def _handle(self, item: Mapping[str, Any]) -> None:
        """Dispatch one pub/sub item: a confirmation or a message."""
        channel = item.get("channel")
        name = channel.decode("utf-8") if isinstance(channel, bytes) else str(channel)
        if not name.startswith(self.prefix):
            return
        topic = name[len(self.prefix) :]
        if item.get("type") == "subscribe":
            waiter = self._confirmations.get(topic)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif item.get("type") == "message":
            data = item.get("data")
            text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
            try:
                kind = json.loads(text).get("type")
            except (ValueError, AttributeError):
                logger.warning("ignoring a malformed message on Redis channel %s", name)
                return
            self._local.deliver(LiveMessage(topic, str(kind), text))

    async def _send_loop(self) -> None:
        """Send queued messages to Redis, pipelined; drop them while Redis is away."""
        if self._client is None:
            raise FanOutError("RedisFanOut is not started")
        backoff = 0.1
        with contextlib.suppress(StopAsyncIteration):
            while True:
                batch = [await self._outbox.get()]
                while self._outbox.qsize() and len(batch) < 500:
                    batch.append(await self._outbox.get())
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for message in batch:
                            pipe.publish(self.prefix + message.topic, message.text)
                        await pipe.execute()
                    backoff = 0.1
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                    self._send_errors += 1
                    logger.warning("Redis publish failed (%s); %d messages lost", exc, len(batch))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
