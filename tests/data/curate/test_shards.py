"""Shards: byte ranges of a JSONL file hold each of its lines exactly once, in order, at any shard size; the
engine returns results in item order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemotron4.cli import main
from nemotron4.data.engine import EngineConfig, open_engine
from nemotron4.data.shards import plan_shards, shard_texts
from nemotron4.errors import UserError


@pytest.mark.parametrize("shard_bytes", [1, 7, 30, 64, 10_000])
def test_byte_ranges_hold_every_line_once(tmp_path: Path, shard_bytes: int) -> None:
    texts = [f"doc {i} " + "é" * (i % 13) for i in range(40)] + ["", "last"]
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts) + '{"bad json\n')
    shards = plan_shards([path], shard_bytes)
    assert len(shards) == -(-path.stat().st_size // shard_bytes)
    got = [t for s in shards for t in shard_texts(s)]
    assert got == [t for t in texts if t.strip()]


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_engine_map_keeps_item_order(workers: int) -> None:
    with open_engine(EngineConfig("local", workers)) as engine:
        assert engine.map(_square, range(20), progress=False) == [x * x for x in range(20)]


def test_engine_settings_are_checked() -> None:
    with pytest.raises(UserError, match="unknown engine"):
        EngineConfig("spark")
    with pytest.raises(UserError, match="needs the dask engine"):
        EngineConfig("local", address="tcp://h:8786")


def test_prepare_scheduler_needs_dask(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "x.jsonl", "--output", "o", "--tokenizer", "t.model", "--scheduler", "tcp://h:1"]) == 2
    assert "--scheduler needs --engine dask" in capsys.readouterr().err
