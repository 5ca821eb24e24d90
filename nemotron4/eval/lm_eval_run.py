"""Running LM-Evaluation-Harness tasks on our model: one call per shot count, and a check for task data that would
have to be downloaded, made before anything runs so that an offline machine says which task lacks what instead of
failing deep inside `datasets`.

Harness tasks read Hugging Face datasets (`dataset_path` in the task YAML). Offline (HF_DATASETS_OFFLINE /
HF_HUB_OFFLINE set, or the hub unreachable) a task runs only when its datasets are in the local cache.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nemotron4.eval.suites import PAPER_SUITE, Benchmark

__all__ = ["hub_offline", "missing_data", "run_paper_suite", "run_tasks", "task_manager"]

_LOCAL_BUILDERS = {"json", "csv", "text", "parquet", "arrow", "pandas"}  # read files named in the task: no hub


def hub_offline(timeout_s: float = 3.0) -> bool:
    """True when the Hugging Face hub (HF_ENDPOINT) cannot be used: offline mode set, or no connection within
    `timeout_s`."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return True
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co",
                                       url.port or (80 if url.scheme == "http" else 443)), timeout=timeout_s):
            return False
    except OSError:
        return True


def _cache_dirs() -> list[Path]:
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return [Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets")),
            Path(os.environ.get("HF_HUB_CACHE", os.environ.get("HUGGINGFACE_HUB_CACHE", home / "hub")))]


def dataset_available(path: str) -> bool:
    """Whether a dataset can be loaded without the network: a local directory, a file builder, or a copy in the
    `datasets` cache (`org___name`) or the hub cache (`datasets--org--name`)."""
    if path in _LOCAL_BUILDERS or Path(path).expanduser().exists():
        return True
    datasets_cache, hub_cache = _cache_dirs()
    return (datasets_cache / path.replace("/", "___")).is_dir() or (hub_cache / f"datasets--{path.replace('/', '--')}"
                                                                    ).is_dir()


def task_manager(include_path: str | None = None) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path) if include_path else TaskManager()


def _datasets(tm: Any, name: str, seen: set[str] | None = None) -> set[str]:
    """The `dataset_path`s a task, group or tag reads (through the harness's task index)."""
    seen = set() if seen is None else seen
    if name in seen:
        return set()
    seen.add(name)
    entry = tm.task_index.get(name)
    if entry is None:
        raise KeyError(name)
    cfg = entry.cfg or {}
    out = {cfg["dataset_path"]} if cfg.get("dataset_path") else set()
    members = list(cfg.get("task")) if isinstance(cfg.get("task"), list) else []
    if entry.kind.name == "TAG":  # a tag's `tags` are its members; a task's are the tags it carries: not followed
        members += sorted(entry.tags or ())
    for m in members:
        sub = m.get("task") if isinstance(m, dict) else m
        if isinstance(sub, str):
            out |= _datasets(tm, sub, seen)
    return out


def missing_data(tm: Any, tasks: Iterable[str]) -> dict[str, list[str]]:
    """task -> datasets it needs that are not available offline (only the tasks that lack some)."""
    out = {}
    for t in tasks:
        try:
            need = _datasets(tm, t)
        except KeyError:
            out[t] = ["<no such task in this lm-eval>"]
            continue
        lacking = sorted(p for p in need if not dataset_available(p))
        if lacking:
            out[t] = lacking
    return out


def offline_message(benchmark: str, lacking: dict[str, list[str]]) -> str:
    """One line per benchmark: which of its tasks lack which datasets."""
    datasets = sorted({d for ds in lacking.values() for d in ds})
    return f"{benchmark}: skipped: needs {', '.join(datasets)} (tasks {', '.join(lacking)}), not in the local cache"


def how_to_provide_data() -> str:
    return (f"Task data comes from the Hugging Face hub, which is unreachable (or HF_*_OFFLINE is set), and the local "
            f"cache ({_cache_dirs()[0]}) lacks it. On a connected machine run the same command (or "
            "`python -c \"import datasets; datasets.load_dataset('DATASET')\"` per dataset), copy its HF_HOME "
            "(~/.cache/huggingface) here, and set HF_DATASETS_OFFLINE=1.")


def run_tasks(
    lm: Any,
    tasks: list[str],
    *,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    tm: Any = None,
    unsafe_code: bool = False,
    log_samples: bool = False,
) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` on our `Nemotron4LM` object; returns the harness's results dict."""
    import lm_eval

    if unsafe_code:
        os.environ.setdefault("HF_ALLOW_CODE_EVAL", "1")  # HF evaluate's code_eval refuses to run without it
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=tm,
                                   log_samples=log_samples, confirm_run_unsafe_code=unsafe_code,
                                   bootstrap_iters=0)


def _score(results: dict[str, Any], b: Benchmark) -> float | None:
    values = [results.get(t, {}).get(b.metric) for t in b.tasks]
    values = [v for v in values if isinstance(v, int | float)]
    return 100.0 * sum(values) / len(values) if values and len(values) == len(b.tasks) else None


def run_paper_suite(
    lm: Any,
    *,
    limit: int | float | None = None,
    tm: Any = None,
    unsafe_code: bool = False,
    runners: dict[str, Callable[[], tuple[float | None, str]]] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Every benchmark of the paper's table that can run here; one row per benchmark with our score (percent),
    the paper's, and a status: "ok", "skipped: ..." (data missing offline, unsafe code not allowed) or the note
    of a benchmark that is not covered. `runners` maps a benchmark's runner ("humaneval", "multipl-e",
    "translation") to a function returning (score in percent, status)."""
    tm = tm or task_manager()
    offline = hub_offline()
    rows: dict[str, dict[str, Any]] = {}
    skipped_offline = False
    by_shots: dict[int, list[Benchmark]] = {}
    for b in PAPER_SUITE:
        row = rows[b.name] = {"benchmark": b.name, "area": b.area, "shots": b.shots, "tasks": list(b.tasks),
                              "metric": b.metric, "paper": b.paper, "ours": None, "status": b.status or "ok",
                              "note": b.note}
        if b.runner == "lm-eval":
            lacking = missing_data(tm, b.tasks) if offline else {}
            if lacking:
                log(offline_message(b.name, lacking))
                row["status"] = "skipped: no data offline"
                skipped_offline = True
            elif b.unsafe_code and not unsafe_code:
                row["status"] = "skipped: executes model-written code; pass --unsafe-code"
            else:
                by_shots.setdefault(b.shots, []).append(b)
        elif b.runner in (runners or {}):
            row["ours"], row["status"] = runners[b.runner]()
    if skipped_offline:
        log(how_to_provide_data())
    for shots, benchmarks in sorted(by_shots.items()):
        tasks = list(dict.fromkeys(t for b in benchmarks for t in b.tasks))
        log(f"lm-eval: {shots}-shot: {', '.join(tasks)}")
        results = run_tasks(lm, tasks, num_fewshot=shots, limit=limit, tm=tm,
                            unsafe_code=unsafe_code and any(b.unsafe_code for b in benchmarks))["results"]
        for b in benchmarks:
            rows[b.name]["ours"] = _score(results, b)
            rows[b.name]["status"] = "ok" if rows[b.name]["ours"] is not None else "no result for " + b.metric
    return list(rows.values())
