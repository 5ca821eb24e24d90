"""Where data jobs run: this machine's cores, or a Dask cluster of many machines.

`Engine.map(fn, items)` runs `fn` on every item and returns the results in item order, whatever the number or
speed of the workers, so a job's output never depends on where it ran. Engines:

- `local` (default): a process pool on this machine, one process per core (`workers`), or this process with
  `workers=1`.
- `dask`: a Dask distributed cluster. With `address` (`tcp://host:8786`, a scheduler started with
  `dask scheduler` and `dask worker` on each node, or by dask-jobqueue / dask-kubernetes) the work spreads over
  every node; without it, a `LocalCluster` of `workers` processes. Workers must see the same file system paths
  (a shared or network file system), as with any multi-node data job.

Functions and items must be picklable top-level objects; each call should do seconds to minutes of work.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nemotron4.errors import UserError

__all__ = ["ENGINES", "Engine", "EngineConfig", "open_engine"]

ENGINES = ("local", "dask")


@dataclass(frozen=True)
class EngineConfig:
    kind: str = "local"
    workers: int = 0
    """Processes (local, or a Dask LocalCluster); 0: all cores."""
    address: str | None = None
    """Dask scheduler address; None with kind 'dask': a LocalCluster on this machine."""

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise UserError(f"unknown engine {self.kind!r}; choose one of {', '.join(ENGINES)}")
        if self.workers < 0:
            raise UserError(f"workers must be >= 0 (0: all cores), got {self.workers}")
        if self.address and self.kind != "dask":
            raise UserError("a scheduler address needs the dask engine (--engine dask)")


class Engine:
    """Runs functions over items on an executor (None: in this process)."""

    def __init__(self, executor: cf.Executor | None, workers: int, description: str) -> None:
        self.executor, self.workers, self.description = executor, workers, description

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], desc: str = "", progress: bool = True,
            weights: list[int] | None = None) -> list[Any]:
        """`[fn(x) for x in items]`, in parallel; a progress bar over `weights` (e.g. bytes per item) or items."""
        from tqdm import tqdm

        items = list(items)
        weights = weights or [1] * len(items)
        bar = tqdm(total=sum(weights), desc=desc, disable=not progress or not items, unit_scale=True,
                   unit="B" if max(weights, default=1) > 1 else "it", leave=False)
        try:
            if self.executor is None:
                out = []
                for x, w in zip(items, weights, strict=True):
                    out.append(fn(x))
                    bar.update(w)
                return out
            futures = {self.executor.submit(fn, x): i for i, x in enumerate(items)}
            results: list[Any] = [None] * len(items)
            for f in cf.as_completed(futures):
                i = futures[f]
                results[i] = f.result()
                bar.update(weights[i])
            return results
        finally:
            bar.close()


@contextmanager
def open_engine(cfg: EngineConfig) -> Iterator[Engine]:
    """An `Engine` for `cfg`, shut down on exit."""
    workers = cfg.workers or os.cpu_count() or 1
    if cfg.kind == "local":
        if workers == 1:
            yield Engine(None, 1, "this process")
            return
        with cf.ProcessPoolExecutor(workers) as ex:
            yield Engine(ex, workers, f"{workers} local processes")
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise UserError("the dask engine needs dask.distributed: pip install 'nemotron4[curate]'") from e
    if cfg.address:
        try:
            client = Client(cfg.address, timeout="30s")
        except OSError as e:
            raise UserError(f"cannot reach the Dask scheduler at {cfg.address}: {e}") from e
        with client:
            n = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
            yield Engine(client.get_executor(pure=False), n, f"Dask cluster {cfg.address} ({n} worker threads)")
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield Engine(client.get_executor(pure=False), workers, f"Dask LocalCluster of {workers} processes")
