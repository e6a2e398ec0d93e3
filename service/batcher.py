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

Bounded, fair work: every request is cut into windows once (``QAReader.prepare``) and priced by them before it is
queued, and the model runs windows, not requests. A model call takes at most ``max_batch_windows``
windows, shared out evenly among the requests in progress (water-filling, in arrival order), so a
request of hundreds of windows runs over many calls while one-window requests that arrive meanwhile
join the very next call: a small request waits for at most one call, whatever is in progress. The
queue holds at most ``max_queued_windows`` (a request that does not fit gets ``QueueFull``, with the
seconds until it should fit at the measured windows/s); a request not answered ``request_timeout_s``
after it arrived is dropped with the rest of its windows (``DeadlineExceeded``); a request whose
client went away (its awaiting task cancelled) is dropped before its next window reaches the model.
Each call is one job on the worker thread: cut the windows of the newly arrived requests
(``QAReader.prepare``), run the chosen windows (``run_windows``), turn finished requests into answers
(``finish``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from squad_qa.inference.reader import Answer, PreparedItems, QAItem, QAReader

logger = logging.getLogger(__name__)


class ServiceStopping(RuntimeError):
    """The batcher is stopping (or not running): the request was not answered."""


class QueueFull(Exception):
    def __init__(self, queued_windows: int, retry_after_s: int) -> None:
        super().__init__(f"the queue holds {queued_windows} windows of work; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Exception):
    """The request was not answered within request_timeout_s and was dropped (with its windows)."""


@dataclass
class _Pending:
    items: list[QAItem]
    future: asyncio.Future = field(repr=False)
    windows: int = 0  # its price: the windows its contexts become
    deadline: float = math.inf  # time.monotonic() after which it is dropped unanswered
    job: PreparedItems | None = field(default=None, repr=False)  # its windows, once cut (worker thread)
    done: int = 0  # windows already run (they run in order)

    @property
    def left(self) -> int:
        return max(0, (self.job.windows if self.job is not None else self.windows) - self.done)


def share_windows(left: list[int], budget: int) -> list[int]:
    """Water-filling: how many of its ``left`` windows each request (in arrival order) runs in a call
    of ``budget`` windows. Every request gets an equal share, what a small one does not need goes to
    the others, and the earlier requests get the remainder."""
    alloc = [0] * len(left)
    remaining = budget
    while remaining > 0:
        open_ = [i for i, n in enumerate(left) if alloc[i] < n]
        if not open_:
            break
        share = max(1, remaining // len(open_))
        for i in open_:
            take = min(left[i] - alloc[i], share, remaining)
            alloc[i] += take
            remaining -= take
            if remaining == 0:
                break
    return alloc


class MicroBatcher:
    def __init__(self, reader: QAReader, max_batch_size: int = 32, max_wait_ms: float = 10.0,
                 max_batch_windows: int = 16, max_queued_windows: int = 2048,
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
        self._waiting_windows = 0  # the price of everything in self._waiting
        self._active: list[_Pending] = []  # requests with windows run and windows left, arrival order
        self._windows_per_s: float | None = None  # measured model throughput, for Retry-After
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        # The previous batch: how many requests it answered, when, and how many were queued then.
        self._last_batch_requests = 0
        self._last_batch_end = float("-inf")
        self._queued_at_last_end = 0
        # Requests taken off the queue while a batch is gathered (then they join self._active): on
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
        """Requests not answered yet: waiting, or with windows still to run."""
        return len(self._waiting) + len(self._active)

    @property
    def queued_windows(self) -> int:
        """Windows still to run: the price of the waiting requests plus what is left of the others."""
        return self._waiting_windows + sum(p.left for p in self._active)

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
        waiting = [*self._inflight, *self._active, *self._waiting]
        self._inflight, self._active = [], []
        self._waiting.clear()
        self._waiting_windows = 0
        for p in waiting:  # fail whoever is still waiting instead of hanging them
            if not p.future.done():
                p.future.set_exception(ServiceStopping("service is shutting down"))
        if self._executor is not None:  # let a running model call finish, off the event loop
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None

    async def submit(self, items: list[QAItem], windows: int = 0,
                     job: PreparedItems | None = None) -> list[list[Answer]]:
        """Answers for `items` (one request's worth, priced at `windows`; ``job``: their windows when the
        caller cut them already, else the worker cuts them), once the call holding them has run. QueueFull when the queue has no room for them (an empty queue takes any request);
        DeadlineExceeded when they waited past request_timeout_s; cancelling the awaiting task drops
        them before any model time is spent on them."""
        if not self.running or self._arrived is None:
            raise ServiceStopping("service is not running")
        if self.queued_requests and self.queued_windows + windows > self.max_queued_windows:
            raise QueueFull(self.queued_windows, self.retry_after(windows))
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(items, future, windows, time.monotonic() + self.request_timeout_s, job))
        self._waiting_windows += windows
        self._arrived.set()
        return await future

    def _pop(self) -> _Pending:
        p = self._waiting.popleft()
        self._waiting_windows -= p.windows
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
        size = len(batch[0].items)
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
            p = self._pop()
            batch.append(p)
            size += len(p.items)
        return batch

    def _take_waiting(self) -> list[_Pending]:
        """What is queued now, without waiting (a call is due anyway: requests are in progress)."""
        batch: list[_Pending] = []
        size = 0
        while self._waiting and size < self.max_batch_size:
            batch.append(self._pop())
            size += len(batch[-1].items)
        return batch

    async def _collect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Requests in progress: the next call is due at once, with whatever has arrived meanwhile;
            # otherwise gather (and perhaps wait for expected company, see the module docstring).
            new = self._take_waiting() if self._active else await self._gather()
            self._active.extend(new)
            self._inflight = []
            # A client that went away (cancelled future) costs no more model time; nor does a request
            # past its deadline (its client gets an error now, not an answer later).
            now = time.monotonic()
            for p in self._active:
                if now > p.deadline and not p.future.done():
                    p.future.set_exception(DeadlineExceeded(
                        f"the request was not answered within {self.request_timeout_s:g} s and was dropped"))
            self._active = [p for p in self._active if not p.future.done()]
            if not self._active:
                continue
            t0 = time.monotonic()
            answered, failed, ran = await loop.run_in_executor(self._executor, self._call, list(self._active))
            took = time.monotonic() - t0
            if ran and took > 0:
                rate = ran / took
                self._windows_per_s = rate if self._windows_per_s is None else 0.7 * self._windows_per_s + 0.3 * rate
            self.calls += 1
            for p in self._active:
                if id(p) in failed and not p.future.done():
                    p.future.set_exception(failed[id(p)])
                elif id(p) in answered and not p.future.done():
                    p.future.set_result(answered[id(p)])
            self.requests_served += len(answered)
            self._active = [p for p in self._active if id(p) not in answered and id(p) not in failed]
            self._last_batch_requests = len(answered)
            self._last_batch_end = time.monotonic()
            self._queued_at_last_end = len(self._waiting)

    def _call(self, jobs: list[_Pending]) -> tuple[dict, dict, int]:
        """One model call, on the worker thread: cut the windows of the requests new to it, run this
        call's share of everyone's windows, answer the requests that are complete. Returns
        ({id: answers}, {id: exception}, windows run); a failure is pinned on the request causing it."""
        failed: dict[int, BaseException] = {}
        for p in jobs:
            if p.job is None:
                try:
                    p.job = self.reader.prepare(p.items)
                except Exception as e:  # a bad item: only its request fails
                    failed[id(p)] = e
        ready = [p for p in jobs if id(p) not in failed]
        alloc = share_windows([p.left for p in ready], self.max_batch_windows)
        plan = [(p, np.arange(p.done, p.done + n)) for p, n in zip(ready, alloc) if n]
        try:
            self.reader.run_windows([(p.job, rows) for p, rows in plan])
        except Exception as e:
            if len(plan) == 1:
                logger.exception("model call failed")
                failed[id(plan[0][0])] = e
            else:
                # One bad request must not fail its neighbours: retry each on its own, so the
                # error lands only on the request that causes it.
                logger.warning("model call for %d requests failed (%r); retrying one by one", len(plan), e)
                for p, rows in plan:
                    try:
                        self.reader.run_windows([(p.job, rows)])
                    except Exception as e1:
                        logger.exception("model call failed")
                        failed[id(p)] = e1
        ran = 0
        for p, rows in plan:
            if id(p) not in failed:
                p.done += len(rows)
                ran += len(rows)
        answered: dict[int, list[list[Answer]]] = {}
        for p in ready:
            if id(p) not in failed and p.left == 0:
                try:
                    answered[id(p)] = self.reader.finish(p.job)
                except Exception as e:
                    logger.exception("post-processing failed")
                    failed[id(p)] = e
        return answered, failed, ran
