"""Micro-batching: many concurrent HTTP requests, one model call.

Requests put their items on an asyncio queue and await a future. One collector task takes the
first waiting request, gathers whatever else arrives within `max_wait_ms` (up to `max_batch_size`
items), and hands the lot to QAReader.answer_batch on a single worker thread. So:

- the event loop never runs the model (tokenisation, forward pass and post-processing all happen
  on the worker thread) and keeps accepting requests meanwhile;
- exactly one model call runs at a time: CPU threads are not oversubscribed and GPU memory use is
  bounded by one batch;
- while a call runs, new requests pile up in the queue and become the next batch, so under load
  batches grow by themselves.

How long to gather: a batch waits (at most `max_wait_ms`) only for company it can expect. When
a batch has just been answered, its clients typically send their next request within a few
milliseconds; together with the requests that queued up while it ran, that is the next batch.
Waiting for them matters on a CPU: per question, a forward pass over 1-2 windows costs 1.5-2x one
over 6-8, and without the wait a steady load of 8 clients settles into alternating batches of
1-2 and 6-7 requests. A lone client (its previous batch was itself) or an idle service waits for
nobody, so concurrency 1 pays no batching delay at all.

Bounded work: every request is priced in windows (``QAReader.count_windows``) before it is queued.
A model call takes at most ``max_batch_windows`` windows (a request over that runs alone), so a
small request waits behind at most the call that is running and the requests queued before it;
the queue holds at most ``max_queued_windows`` (a request that does not fit gets ``QueueFull``,
with the seconds until the queue should have room at the measured windows/s); a request still
queued ``request_timeout_s`` after it arrived is dropped (``DeadlineExceeded``); and a request
whose client went away (its awaiting task cancelled) is dropped before it costs model time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from squad_qa.inference import Answer, QAItem, QAReader

logger = logging.getLogger(__name__)


class ServiceStopping(RuntimeError):
    """The batcher is stopping (or not running): the request was not answered."""


class QueueFull(Exception):
    def __init__(self, queued_windows: int, retry_after_s: int) -> None:
        super().__init__(f"the queue holds {queued_windows} windows of work; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Exception):
    """The request waited in the queue longer than request_timeout_s and was dropped unanswered."""


@dataclass
class _Pending:
    items: list[QAItem]
    future: asyncio.Future = field(repr=False)
    windows: int = 0  # its price: the windows its contexts become
    deadline: float = math.inf  # time.monotonic() after which it is dropped if still queued


class MicroBatcher:
    def __init__(self, reader: QAReader, max_batch_size: int = 32, max_wait_ms: float = 10.0,
                 max_batch_windows: int = 128, max_queued_windows: int = 2048,
                 request_timeout_s: float = 60.0) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_batch_windows < 1 or max_queued_windows < 1 or not request_timeout_s > 0:
            raise ValueError("max_batch_windows, max_queued_windows and request_timeout_s must be positive")
        self.reader = reader
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_batch_windows = max_batch_windows
        self.max_queued_windows = max_queued_windows
        self.request_timeout_s = request_timeout_s
        # FIFO of waiting requests and an event set whenever one arrives (a deque, not an
        # asyncio.Queue: gathering must look at the next request before deciding to take it).
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self.queued_windows = 0  # the price of everything in self._waiting
        self._windows_per_s: float | None = None  # measured model throughput, for Retry-After
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        # The previous batch: how many requests it answered, when, and how many were queued then.
        self._last_batch_requests = 0
        self._last_batch_end = float("-inf")
        self._queued_at_last_end = 0
        # Requests taken off the queue and not yet answered (being gathered, run or retried): on
        # stop() they are failed too, so no client waits forever.
        self._inflight: list[_Pending] = []
        # Counters for logs and tests: how many model calls served how many requests.
        self.calls = 0
        self.requests_served = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queued_requests(self) -> int:
        return len(self._waiting)

    def retry_after(self, windows: int) -> int:
        """Seconds until ``windows`` more should fit the queue at the measured windows/s (1..300)."""
        rate = self._windows_per_s or 10.0
        excess = self.queued_windows + windows - self.max_queued_windows
        return int(min(300, max(1, math.ceil(excess / rate))))

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-model")
        self._task = asyncio.create_task(self._collect_forever(), name="qa-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        waiting = [*self._inflight, *self._waiting]
        self._inflight = []
        self._waiting.clear()
        self.queued_windows = 0
        for p in waiting:  # fail whoever is still waiting instead of hanging them
            if not p.future.done():
                p.future.set_exception(ServiceStopping("service is shutting down"))
        if self._executor is not None:  # let a running model call finish, off the event loop
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None

    async def submit(self, items: list[QAItem], windows: int = 0) -> list[list[Answer]]:
        """Answers for `items` (one request's worth, priced at `windows`), once the call holding them
        has run. QueueFull when the queue has no room for them (an empty queue takes any request);
        DeadlineExceeded when they waited past request_timeout_s; cancelling the awaiting task drops
        them before any model time is spent on them."""
        if not self.running or self._arrived is None:
            raise ServiceStopping("service is not running")
        if self._waiting and self.queued_windows + windows > self.max_queued_windows:
            raise QueueFull(self.queued_windows, self.retry_after(windows))
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(items, future, windows, time.monotonic() + self.request_timeout_s))
        self.queued_windows += windows
        self._arrived.set()
        return await future

    def _pop(self) -> _Pending:
        p = self._waiting.popleft()
        self.queued_windows -= p.windows
        return p

    async def _next_arrival(self, timeout: float | None) -> bool:
        """Wait until the queue holds a request (at most ``timeout`` s); whether it does."""
        assert self._arrived is not None
        while not self._waiting:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                return False
        return True

    async def _gather(self) -> list[_Pending]:
        await self._next_arrival(None)
        batch = [self._pop()]
        self._inflight = batch  # the same list: whatever is appended below is in flight too
        size, windows = len(batch[0].items), batch[0].windows
        wait = self.max_wait_ms / 1000.0
        now = time.monotonic()
        # Company to expect (see the module docstring): the clients of a batch answered just now
        # plus whoever was queued behind it; otherwise only what is already queued.
        if now - self._last_batch_end <= wait:
            expected = self._last_batch_requests + self._queued_at_last_end
        else:
            expected = 1
        deadline = now + wait
        while size < self.max_batch_size:
            if not self._waiting:
                remaining = deadline - time.monotonic()
                if len(batch) >= expected or remaining <= 0 or not await self._next_arrival(remaining):
                    break
            if self._waiting[0].future.done():  # its client went away: drop it, whatever its size
                self._pop()
                continue
            if windows + self._waiting[0].windows > self.max_batch_windows:
                break  # too much for this call: it leads the next one
            p = self._pop()
            batch.append(p)
            size += len(p.items)
            windows += p.windows
        return batch

    async def _collect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            # A client that went away (cancelled future) costs no model time; nor does a request
            # that waited past its deadline (its client gets an error now, not an answer later).
            now = time.monotonic()
            for p in batch:
                if now > p.deadline and not p.future.done():
                    p.future.set_exception(DeadlineExceeded(
                        f"the request waited over {self.request_timeout_s:g} s in the queue and was dropped"))
            batch = [p for p in batch if not p.future.done()]
            if not batch:
                self._inflight = []
                continue
            t0 = time.monotonic()
            await self._run(loop, batch)
            took = time.monotonic() - t0
            windows = sum(p.windows for p in batch)
            if windows and took > 0:
                rate = windows / took
                self._windows_per_s = rate if self._windows_per_s is None else 0.7 * self._windows_per_s + 0.3 * rate
            self._inflight = []
            self._last_batch_requests = len(batch)
            self._last_batch_end = time.monotonic()
            self._queued_at_last_end = len(self._waiting)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        items = [it for p in batch for it in p.items]
        try:
            answers = await loop.run_in_executor(self._executor, self.reader.answer_batch, items)
        except asyncio.CancelledError:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(ServiceStopping("service is shutting down"))
            raise
        except Exception as e:
            if len(batch) > 1:
                # One bad request must not fail its neighbours: retry each on its own, so the
                # error lands only on the request that causes it.
                logger.warning("batch of %d requests failed (%r); retrying one by one", len(batch), e)
                for p in batch:
                    await self._run(loop, [p])
                return
            logger.exception("model call failed")
            if not batch[0].future.done():
                batch[0].future.set_exception(e)
            return
        self.calls += 1
        self.requests_served += len(batch)
        pos = 0
        for p in batch:
            n = len(p.items)
            if not p.future.done():
                p.future.set_result(answers[pos : pos + n])
            pos += n
