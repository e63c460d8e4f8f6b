"""Dynamic micro-batching of `POST /v1/recommendations` in each worker (group commit).

One decision alone costs a store read, an engine call at n = 1 (a few hundred numpy calls
whose fixed cost is about 40% of its CPU) and a write transaction behind the SQLite write
gate, which the worker's event loop waits for in `flock` while the other worker writes.
Requests that arrive while a worker is busy are therefore decided together: one state
read, one engine call on the arrays, one write transaction (`serving.api.together`).

Self-clocking: a request that finds the worker idle starts a drain task, which hands the
queue to the worker's decision thread (`serving.api.decision_thread`) as one group;
requests that arrive meanwhile (the loop keeps reading and parsing them while the thread
decides) form the next group, handed over once the previous one is done. So groups are
strictly sequential and a group is as large as what arrived during the previous one, up to
`MAX_GROUP`.

Lingering: a group pays a fixed cost (about 1.1 ms of CPU: the state read, the engine's
numpy calls, the transaction) and each request a little more, so at a moderate rate, where
groups hold one or two requests, each request costs about twice the CPU it costs at the
maximum, and the cores run near saturation at half the maximum's rate. When requests
arrive faster than one per `linger` (a moving average of the gaps between arrivals), a
group waits until `fill` requests are queued or its oldest request has waited `linger`,
whichever comes first: larger groups, less CPU per request, at most `linger` of added
latency. At a low rate, and at the maximum (where the queue already holds `fill`), nothing
waits. Callers that wait for each answer before they send again (one sequential client, a
few closed loops) would only be slowed down: every request they will send is already
queued, so nobody arrives in the last three quarters of a linger (`FUTILE_SHARE`). When
most recent lingers were so (a moving average over `FUTILE_LIMIT`), the batcher stops
lingering and tries again once every `PROBE_EVERY` groups.
`ServingSettings.group_linger_ms` (0 turns it off) and `group_fill`.

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

GAP_WEIGHT = 0.125
"""Weight of the latest gap between two arrivals in their moving average (as TCP's SRTT)."""

IDLE_GAP = 1.0
"""The average gap a new batcher starts from, and the longest one gap counts for (seconds)."""

FUTILE_SHARE = 0.75
"""A linger is futile when nobody arrived in this last share of it."""

FUTILE_WEIGHT = 0.125
"""Weight of the latest linger in the moving average of futile ones (a sequential caller
is held by 11 lingers before the average passes `FUTILE_LIMIT`)."""

FUTILE_LIMIT = 0.75
"""Above this average the batcher stops lingering. Independent arrivals leave the last three
quarters of a linger empty 47% of the time at the rate where lingering starts (one per
`linger`), 22% at twice that rate; a sequential caller, always."""

PROBE_EVERY = 64
"""While it does not linger for futility, the batcher still lingers once per this many
groups, to notice when the callers change (a sequential caller pays one `linger` per this
many requests: 16 cost one such caller 13% of its rate in `bench_api.py`)."""

Result = Outcome | Exception
"""A request's outcome, or the error it answers with."""


@dataclass(eq=False)
class _Waiting:
    body: RecommendationRequest
    key: tuple[object, ...] | None
    future: asyncio.Future[Outcome]
    arrived: float  # the loop's clock


class DecisionBatcher:
    """The queue of one runtime's decision requests in one worker (see the module doc)."""

    def __init__(
        self,
        rt: Runtime,
        max_group: int = MAX_GROUP,
        linger: float | None = None,
        fill: int | None = None,
        gap: float = IDLE_GAP,
    ) -> None:
        self._rt = weakref.ref(rt)
        self.max_group = max_group
        self.linger = rt.settings.group_linger_ms / 1000 if linger is None else linger
        self.fill = min(max_group, rt.settings.group_fill if fill is None else fill)
        self._queue: deque[_Waiting] = deque()
        self._drain: asyncio.Task[None] | None = None
        self.gap = gap  # moving average of the gaps between arrivals (seconds)
        self._last: float | None = None  # the latest arrival
        self._filled: asyncio.Future[None] | None = None  # set when `fill` are queued
        self._futile = 0.0  # moving average of futile lingers (see the module doc)
        self.futile_limit = FUTILE_LIMIT  # above 1: never stops lingering (tests)
        self._skipped = 0  # groups not lingered for futility since the last linger
        self.groups = 0  # groups decided (for tests and the bench)
        self.grouped = 0  # requests decided in them
        self.fallbacks = 0  # groups that failed before their commit (decided one by one)

    async def decide(self, body: RecommendationRequest) -> Outcome:
        """The outcome of one request (its errors raised), decided with those around it."""
        key = group_key(body)  # None: decided alone, in its turn
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._last is not None:
            self.gap += GAP_WEIGHT * (min(now - self._last, IDLE_GAP) - self.gap)
        self._last = now
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.append(_Waiting(body, key, future, now))
        if self._drain is None:
            self._drain = asyncio.create_task(self._run())
        elif self._filled is not None and len(self._queue) >= self.fill:
            _wake(self._filled)
        return await future

    async def _linger(self) -> None:
        """Wait, when requests arrive often, until `fill` are queued or the oldest has
        waited `linger` (see the module doc); return at once otherwise."""
        if (
            self.linger <= 0
            or self.gap >= self.linger
            or len(self._queue) >= self.fill
            or self._queue[0].key is None  # decided alone anyway
        ):
            return
        if self._futile > self.futile_limit:
            self._skipped += 1
            if self._skipped < PROBE_EVERY:
                return
        self._skipped = 0
        loop = asyncio.get_running_loop()
        delay = self._queue[0].arrived + self.linger - loop.time()
        if delay <= 0:
            return
        start = loop.time()
        self._filled = loop.create_future()
        timer = loop.call_later(delay, _wake, self._filled)
        try:
            await self._filled
        finally:
            timer.cancel()
            self._filled = None
        rt = self._rt()
        if rt is not None:
            rt.metrics.group_linger.observe(loop.time() - start)
        if self._last is not None:  # always, with a request queued
            futile = loop.time() - self._last > self.linger * FUTILE_SHARE
            self._futile += FUTILE_WEIGHT * (futile - self._futile)

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
                await self._linger()
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


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
