"""Generating a large synthetic world block by block, straight into a partitioned directory.

`generate_world` holds a whole world in memory (about 3.7 GB at a million customers). Here the
world is drawn in blocks of `block_customers` customers, each block a complete world of its
own customers (population and past campaigns are drawn per customer, so blocks are
independent), with its ids continuing the previous block's sequences; each block is split by
the customer hash and appended to the partitioned directory before the next is drawn. Peak
memory is one block.

Seeds: block 0 is drawn from `seed` itself, block b > 0 from a seed derived from
(`seed`, b) by numpy's SeedSequence. So a world of at most `block_customers` customers is
exactly `generate_world(n, seed)`, split into partitions; a larger one is a different
stream than the unpartitioned generator's for the same seed (same distributions, same
seed gives the same files), and `world.json` records the block size that regenerates it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from features import constants as c
from features.errors import FeaturesError
from features.partition_layout import PartitionLayout
from features.partitioned import PartitionWriter
from features.synthetic.catalog import default_catalog
from features.synthetic.generate import (
    MAX_CUSTOMERS,
    WORLD_FILE,
    IdStart,
    SyntheticWorld,
    generate_world,
)

DEFAULT_BLOCK_CUSTOMERS = 250_000
GROUND_TRUTH_TABLE = "ground_truth"
"""The answer key of a partitioned world: `ground_truth/part=NNN/*.parquet`."""


def block_seed(seed: int, block: int) -> int:
    """The seed of block `block` (block 0: `seed` itself)."""
    if block == 0:
        return seed
    return int(np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0] >> 1)


def generate_partitioned(
    n_customers: int,
    seed: int,
    out: Path,
    n_partitions: int,
    block_customers: int = DEFAULT_BLOCK_CUSTOMERS,
    on_block: Callable[[int, SyntheticWorld], None] | None = None,
) -> PartitionLayout:
    """Draw a world of `n_customers` block by block and write it partitioned into `out`.

    Args:
        on_block: called after each block is written with its customer count and the block
            (progress, summaries); the block is dropped afterwards.

    Raises:
        FeaturesError: a count out of range.
    """
    if not 1 <= n_customers <= MAX_CUSTOMERS:
        raise FeaturesError(
            f"customers: must be between 1 and {MAX_CUSTOMERS:,}, got {n_customers}"
        )
    if block_customers < 1:
        raise FeaturesError(f"block_customers: must be positive, got {block_customers}")
    catalog = default_catalog()
    writer = PartitionWriter(Path(out), n_partitions)
    writer.clear()
    (Path(out) / WORLD_FILE).unlink(missing_ok=True)
    ids = IdStart(total_customers=n_customers)
    for block, start in enumerate(range(0, n_customers, block_customers)):
        size = min(block_customers, n_customers - start)
        world = generate_world(size, block_seed(seed, block), catalog, ids)
        name = f"block-{block:05d}"
        writer.write(world.tables, name)
        writer.write_table(GROUND_TRUTH_TABLE, world.ground_truth, name)
        t = world.tables
        ids = IdStart(
            customer=ids.customer + size,
            order=ids.order + len(t[c.ORDERS]),
            contact=ids.contact + len(t[c.CONTACTS]),
            event=ids.event + len(t[c.EVENTS]),
            total_customers=n_customers,
        )
        if on_block is not None:
            on_block(size, world)
        del world, t
    layout = writer.close(catalog)
    manifest = {"customers": n_customers, "seed": seed, "block_customers": block_customers}
    (Path(out) / WORLD_FILE).write_text(json.dumps(manifest) + "\n", encoding="utf-8")
    return layout
