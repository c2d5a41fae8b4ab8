"""Scale-out of independent units of work on Dask distributed.

Recordings of (model, story) pairs, encodings of different subjects and batches of
permutations are independent: :func:`map_units` runs them serially, on a Dask
``LocalCluster`` (the default for ``scheduler="local"``) or on any running scheduler given by
address (``tcp://host:8786``; a SLURM cluster started with dask-jobqueue exposes one). Results
come back in the order of the inputs, so a distributed run is identical to a serial one when
each unit is deterministic.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Sequence

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(scheduler: str = "local", n_workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client``: a new LocalCluster of worker processes, or a given address."""
    from distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
    else:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()


def map_units(
    func: Callable[..., Any],
    units: Sequence[Any],
    scheduler: str = "serial",
    n_workers: int = 2,
) -> list[Any]:
    """``[func(unit) for unit in units]``, serially or on Dask, in input order.

    Parameters
    ----------
    func : callable
        Must be importable by the workers (a module-level function) and deterministic.
    units : sequence
        One argument per call.
    scheduler : str
        ``"serial"``, ``"local"`` (LocalCluster with ``n_workers`` processes) or an address.
    """
    if scheduler == "serial":
        return [func(unit) for unit in units]
    with dask_client(scheduler, n_workers) as client:
        logger.info("running %d units on %s", len(units), client)
        futures = client.map(func, list(units), pure=False)
        return client.gather(futures)
