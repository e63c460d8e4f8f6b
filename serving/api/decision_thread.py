"""The one thread of a worker process that decides `POST /v1/recommendations` requests.

The micro-batcher (`serving.api.microbatch`) used to decide each group on the event loop
itself: while a group's engine call and its write transaction ran (and while the worker
waited in `flock` for the SQLite write gate), the loop could neither read new requests nor
write finished answers, and the bench measured loop stalls of up to 51 ms. Each group (and
each request decided alone) now runs in this worker's single decision thread and the loop
awaits it: the loop keeps accepting, parsing and answering requests meanwhile, and the
requests that arrive form the next group. With one thread, groups are strictly sequential,
exactly as on the loop: a group sees every earlier group's commit (caps, idempotency keys),
and nothing of the request path runs twice at once in one worker.

One per app (created in the lifespan and shared by every runtime a reload swaps in, so a
reload's old and new batchers still decide one group at a time), shut down at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class DecisionThread:
    """A single-thread executor the event loop hands decision work to (see the module doc)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="winback-decide")

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` in the decision thread, after every piece of work handed over before it;
        its result or exception, once done."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def close(self) -> None:
        """Finish the work in hand and stop the thread (work not yet started is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
