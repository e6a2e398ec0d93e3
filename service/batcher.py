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
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from squad_qa.inference import Answer, QAItem, QAReader

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    items: list[QAItem]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, reader: QAReader, max_batch_size: int = 32, max_wait_ms: float = 10.0) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.reader = reader
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self._queue: asyncio.Queue[_Pending] | None = None
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

    async def start(self) -> None:
        self._queue = asyncio.Queue()
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
        waiting = list(self._inflight)
        self._inflight = []
        if self._queue is not None:
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
        for p in waiting:  # fail whoever is still waiting instead of hanging them
            if not p.future.done():
                p.future.set_exception(RuntimeError("service is shutting down"))
        if self._executor is not None:  # let a running model call finish, off the event loop
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None

    async def submit(self, items: list[QAItem]) -> list[list[Answer]]:
        """Answers for `items` (one request's worth), once the batch holding them has run."""
        if not self.running or self._queue is None:
            raise RuntimeError("batcher is not running")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(items, future))
        return await future

    async def _gather(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._queue.get()]
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
            if not self._queue.empty():
                p = self._queue.get_nowait()
            else:
                remaining = deadline - time.monotonic()
                if len(batch) >= expected or remaining <= 0:
                    break
                try:
                    p = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            batch.append(p)
            size += len(p.items)
        return batch

    async def _collect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            # A client that went away (cancelled future) costs no model time.
            batch = [p for p in batch if not p.future.done()]
            if not batch:
                continue
            await self._run(loop, batch)
            self._inflight = []
            self._last_batch_requests = len(batch)
            self._last_batch_end = time.monotonic()
            self._queued_at_last_end = self._queue.qsize()

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        items = [it for p in batch for it in p.items]
        try:
            answers = await loop.run_in_executor(self._executor, self.reader.answer_batch, items)
        except asyncio.CancelledError:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(RuntimeError("service is shutting down"))
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
