"""Keeping the garbage collector's full passes off the request path.

CPython's cyclic collector runs its oldest generation now and then, on whatever request is
allocating at that moment, and such a pass visits every tracked object the process holds.
A worker holds the loaded runtime (snapshot handle, model, policy, store engine) for its whole
life; a full pass over it measured 340-410 ms on the 1M-customer bench snapshot (0.1 ms for
the young generations), a stall of every request queued behind it in that worker.

So once the runtime is loaded, and again after each reload or snapshot swap, `settle_heap`
collects what is garbage at that moment and moves every surviving object into the
collector's permanent generation (`gc.freeze`), which its passes skip; the full pass after
that costs well under a millisecond. Objects frozen this way are still freed by reference
counting; a cycle among them that becomes garbage later (a replaced runtime, say) is
collected by the next `settle_heap`, which unfreezes everything first.
"""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Collect the garbage of now, then freeze every surviving object (see the module doc)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
