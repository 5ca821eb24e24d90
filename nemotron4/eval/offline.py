"""Which LM-Evaluation-Harness tasks can run on this machine, decided before any model loads and before lm-eval or
`datasets` is imported, so that a machine without the Hugging Face hub names what is missing in a second instead
of retrying the hub and dying in `datasets` with a traceback.

When the hub cannot be reached (or HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set), both offline switches are set
for the rest of the process, so nothing later tries the network. A task's datasets (`dataset_path` of its YAML,
through `include:`) are then looked up in the local caches (`nemotron4.eval.lm_eval_run.dataset_available`).
Task YAMLs are found by a text scan of lm-eval's task folder and --include-path, which takes well under a second;
names the scan cannot resolve (groups, tags) go through lm-eval's own TaskManager, which indexes every task (slow).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nemotron4.errors import UserError

__all__ = ["check_tasks", "go_offline_if_unreachable"]

_TASK_LINE = re.compile(r"^task:\s*['\"]?([^\s'\"#]+)", re.M)


def go_offline_if_unreachable() -> bool:
    """True when the hub cannot be used; then HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are set to 1 (they must be set
    before `datasets` / `huggingface_hub` are imported to take effect)."""
    from nemotron4.eval.lm_eval_run import hub_offline

    offline = hub_offline(timeout_s=2.0)
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    return offline


def check_tasks(
    tasks: Sequence[str], include_path: str | None = None, log: Callable[[str], None] = print
) -> list[str]:
    """The tasks of `tasks` that can run here. Offline, each task whose data is not cached gets one line (the task,
    the datasets it needs) and is left out; unknown task names are an error."""
    if not go_offline_if_unreachable():
        return list(tasks)
    from nemotron4.eval.lm_eval_run import dataset_available, how_to_provide_data

    found = _quick_index([d for d in (_lm_eval_tasks_dir(), include_path) if d])
    needs: dict[str, list[str]] = {}
    unresolved = []
    for t in tasks:
        paths = _dataset_paths(found[t]) if t in found else None
        if paths is None:
            unresolved.append(t)
        else:
            needs[t] = sorted(p for p in paths if not dataset_available(p))
    if unresolved:  # groups and tags: lm-eval's own index (slow, but offline now)
        from nemotron4.eval.lm_eval_run import missing_data, task_manager

        lacking = missing_data(task_manager(include_path), unresolved)
        unknown = [t for t, ds in lacking.items() if ds == ["<no such task in this lm-eval>"]]
        if unknown:
            raise UserError(f"unknown lm-eval tasks {', '.join(unknown)} (list them with `lm-eval ls tasks`; "
                            "local task YAMLs go in --include-path)")
        needs.update({t: lacking.get(t, []) for t in unresolved})
    for t in tasks:
        if needs[t]:
            log(f"{t}: skipped: needs {', '.join(needs[t])}, not in the local cache")
    runnable = [t for t in tasks if not needs[t]]
    if len(runnable) < len(tasks):
        log(how_to_provide_data())
    return runnable


def _lm_eval_tasks_dir() -> str | None:
    spec = importlib.util.find_spec("lm_eval")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserError("LM-Evaluation-Harness is not installed: pip install 'nemotron4[eval]'")
    return os.path.join(next(iter(spec.submodule_search_locations)), "tasks")


def _quick_index(roots: list[str]) -> dict[str, Path]:
    """task name -> the YAML that defines it (`task: NAME`), later roots (--include-path) winning."""
    out: dict[str, Path] = {}
    for root in roots:
        for d, _, files in os.walk(root):
            for f in files:
                if f.endswith((".yaml", ".yml")):
                    p = Path(d, f)
                    try:
                        text = p.read_text(encoding="utf-8", errors="replace")
                    except OSError:
                        continue
                    names = _TASK_LINE.findall(text)
                    if len(names) == 1:  # one task per file; a group's list of tasks is left to lm-eval
                        out[names[0]] = p
    return out


def _dataset_paths(path: Path, depth: int = 0) -> set[str] | None:
    """The `dataset_path` of a task YAML, following `include:`; None when it cannot be told from the files."""
    cfg = _load_yaml(path)
    if cfg is None or depth > 8:
        return None
    if isinstance(cfg.get("dataset_path"), str):
        return {cfg["dataset_path"]}
    inc = cfg.get("include")
    if isinstance(inc, str):
        return _dataset_paths(path.parent / inc, depth + 1)
    return None


def _load_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    class Loader(yaml.SafeLoader):  # lm-eval's `!function module.name` tags: their values do not matter here
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    except (OSError, yaml.YAMLError):
        return None
    return cfg if isinstance(cfg, dict) else None
