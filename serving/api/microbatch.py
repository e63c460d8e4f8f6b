"""Dynamic micro-batching of `POST /v1/recommendations` in each worker (group commit).

One decision alone costs a store read, an engine call at n = 1 (a few hundred numpy calls
whose fixed cost is about 40% of its CPU) and a write transaction behind the SQLite write
gate, which the worker's event loop waits for in `flock` while the other worker writes.
Requests that arrive while a worker is busy are therefore decided together: one state
read, one engine call on the arrays, one write transaction (`serving.api.together`).

Self-clocking, no timer: a request that finds the worker idle starts a drain task, which
runs at the loop's next tick (at most one tick of added latency, none at low load) and
hands the queue to the worker's decision thread (`serving.api.decision_thread`) as one
group; requests that arrive meanwhile (the loop keeps reading and parsing them while the
thread decides) form the next group, handed over once the previous one is done. So groups
are strictly sequential, a group is as large as what arrived during the previous one, up to
`MAX_GROUP`, and an idle worker decides each request at once.

What goes together: requests of one runtime with equal `together.group_key` (channel,
campaign, candidate offers); dry runs and requests with a timestamp are decided alone, as
a group of one, in their turn. One group never holds one customer nor one `request_id`
twice: a later such request waits for a later group, which sees the earlier one's record
(caps, idempotency). Requests keep their arrival order per customer and per key.

If a group fails before its commit (a store fault, an engine error), nothing was written
and every request of it is decided alone, as if it had never been batched, so each gets
exactly the answer or error it would have gotten.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from serving.api.runtime import Runtime
from serving.api.schemas import RecommendationRequest
from serving.api.service import Outcome, decide_body
from serving.api.together import ENDPOINT, decide_together, group_key

MAX_GROUP = 64
"""Most requests decided in one group (bounds one group's latency)."""

Result = Outcome | Exception
"""A request's outcome, or the error it answers with."""


@dataclass(eq=False)
class _Waiting:
    body: RecommendationRequest
    key: tuple[object, ...] | None
    future: asyncio.Future[Outcome]


class DecisionBatcher:
    """The queue of one runtime's decision requests in one worker (see the module doc)."""

    def __init__(self, rt: Runtime, max_group: int = MAX_GROUP) -> None:
        self._rt = weakref.ref(rt)
        self.max_group = max_group
        self._queue: deque[_Waiting] = deque()
        self._drain: asyncio.Task[None] | None = None
        self.groups = 0  # groups decided (for tests and the bench)
        self.grouped = 0  # requests decided in them
        self.fallbacks = 0  # groups that failed before their commit (decided one by one)

    async def decide(self, body: RecommendationRequest) -> Outcome:
        """The outcome of one request (its errors raised), decided with those around it."""
        key = group_key(body)  # None: decided alone, in its turn
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(body, key, future))
        if self._drain is None:
            self._drain = asyncio.create_task(self._run())
        return await future

    def _take(self) -> list[_Waiting]:
        """The next group: the oldest request and those after it that may join it."""
        first = self._queue[0]
        group: list[_Waiting] = []
        rest: deque[_Waiting] = deque()
        customers: set[str] = set()
        keys: set[str] = set()
        for w in self._queue:
            cid, rid = w.body.customer_id, w.body.request_id
            ok = (
                len(group) < self.max_group
                and (w is first or (w.key is not None and w.key == first.key))
                and cid not in customers
                and (rid is None or rid not in keys)
            )
            # a request left waiting blocks its customer and key for this group, so that
            # requests of one customer or key are decided in arrival order
            customers.add(cid)
            if rid is not None:
                keys.add(rid)
            (group if ok else rest).append(w)
        self._queue = rest
        return group

    async def _run(self) -> None:
        group: list[_Waiting] = []
        try:
            while self._queue:
                # a request cancelled while it waited is not decided
                group = [w for w in self._take() if not w.future.done()]
                if group:
                    work = partial(self._decide, [w.body for w in group], group[0].key is None)
                    results = await self._in_thread(work)
                    for w, res in zip(group, results, strict=True):
                        if isinstance(res, Exception):
                            _fail(w.future, res)
                        elif not w.future.done():
                            w.future.set_result(res)
                group = []
        finally:
            self._drain = None
            for w in (*group, *self._queue):  # only if cancelled (the loop is closing)
                if not w.future.done():
                    w.future.cancel()
            self._queue.clear()

    async def _in_thread(self, work: Callable[[], list[Result]]) -> list[Result]:
        """`work()` in the worker's decision thread (`serving.api.decision_thread`), or on
        the loop for a runtime built without one (then the loop ticks once after it, so
        that requests arrive between groups)."""
        rt = self._rt()
        thread = rt.decision_thread if rt is not None else None
        if thread is not None:
            return await thread.run(work)
        results = work()
        await asyncio.sleep(0)
        return results

    def _decide(self, bodies: list[RecommendationRequest], alone: bool) -> list[Result]:
        """The outcome or error of each request of one group (run in the decision thread:
        it touches no future and nothing of the event loop)."""
        rt = self._rt()
        if rt is None:
            return [RuntimeError("the runtime was replaced and released") for _ in bodies]
        if alone:  # a request decided alone (a dry run, a caller's timestamp)
            return [_attempt(partial(decide_alone, rt, bodies[0]))]
        start = time.perf_counter()
        try:
            results = decide_together(rt, bodies)
        except Exception:
            # Nothing was written: each request decided alone, with its own answer or error.
            self.fallbacks += 1
            rt.metrics.group_fallbacks.inc()
            return [_attempt(partial(decide_alone, rt, b)) for b in bodies]
        rt.metrics.observe_group(len(bodies), time.perf_counter() - start)
        self.groups += 1
        self.grouped += len(bodies)
        return results


def _attempt(work: Callable[[], Outcome]) -> Result:
    try:
        return work()
    except Exception as exc:
        return exc


def _fail(future: asyncio.Future[Outcome], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


def decide_alone(rt: Runtime, body: RecommendationRequest) -> Outcome:
    """One request decided by itself (the path before micro-batching; dry runs, requests
    with a timestamp, and a failed group's requests)."""
    [outcome] = decide_body(rt, ENDPOINT, body, [body.customer_id])
    return outcome


_BATCHERS: weakref.WeakKeyDictionary[Runtime, DecisionBatcher] = weakref.WeakKeyDictionary()


def batcher_of(rt: Runtime) -> DecisionBatcher:
    """The batcher of `rt` in this process (a reload's new runtime gets its own)."""
    b = _BATCHERS.get(rt)
    if b is None:
        b = _BATCHERS[rt] = DecisionBatcher(rt)
    return b


async def decide_request(rt: Runtime, body: RecommendationRequest) -> Outcome:
    """The outcome of `POST /v1/recommendations`: decided with the requests around it when
    it can be (`together.group_key`), else alone, in its turn (after the requests for its
    customer or key that arrived before it)."""
    return await batcher_of(rt).decide(body)
