"""LR schedule shapes and the batch-size ramp."""

from __future__ import annotations

import pytest

from nemotron4.errors import ConfigError
from nemotron4.schedules import BatchRamp, LRSchedule, format_tokens, parse_tokens


def test_parse_tokens() -> None:
    assert parse_tokens("200B") == 200 * 10**9
    assert parse_tokens("7.6T") == 7_600_000_000_000
    assert parse_tokens("1.5m") == 1_500_000
    assert parse_tokens(4096) == 4096
    assert format_tokens(400 * 10**9) == "400B" and format_tokens(4097) == "4097"
    for bad in ("12X", "", True, -1, "B"):
        with pytest.raises(ConfigError):
            parse_tokens(bad)


def test_batch_ramp_forms_and_thresholds() -> None:
    table2 = BatchRamp.parse("0:384 200B:768 400B:1152")
    assert BatchRamp.parse(["0:384", "200B:768", "400B:1152"]) == table2
    assert BatchRamp.parse([[0, 384], ["200B", 768], [400 * 10**9, 1152]]) == table2
    assert str(table2) == "0:384 200B:768 400B:1152"
    assert BatchRamp.parse(8).stages == ((0, 8),)
    assert table2.size_at(0) == 384
    assert table2.size_at(200 * 10**9 - 1) == 384  # a step starting below the threshold keeps the old size
    assert table2.size_at(200 * 10**9) == 768
    assert table2.size_at(8 * 10**12) == 1152


@pytest.mark.parametrize("bad", ["100:8", "0:8 0:16", "0:8 2K:16 1K:32", "0:0", "0:x", "0-8"])
def test_batch_ramp_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        BatchRamp.parse(bad)


def test_warmup_then_cosine() -> None:
    s = LRSchedule(peak=1.0, min_lr=0.1, total_tokens=1100, warmup_tokens=100, decay="cosine")
    assert s(50) == pytest.approx(0.5)
    assert s(100) == pytest.approx(1.0)
    assert s(600) == pytest.approx(0.55)  # half-way down the cosine
    assert s(1100) == pytest.approx(0.1)
    assert s(5000) == pytest.approx(0.1)  # past the end: stays at min
    values = [s(t) for t in range(100, 1101, 50)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_linear_wsd_constant() -> None:
    lin = LRSchedule(peak=2.0, min_lr=0.0, total_tokens=100, decay="linear")
    assert [lin(t) for t in (0, 25, 100)] == pytest.approx([2.0, 1.5, 0.0])
    wsd = LRSchedule(peak=1.0, min_lr=0.0, total_tokens=1000, decay="wsd", decay_fraction=0.2)
    assert wsd(500) == wsd(800) == 1.0  # stable
    assert wsd(900) == pytest.approx(0.5) and wsd(1000) == pytest.approx(0.0)  # linear decay over the last 20%
    assert LRSchedule(peak=3.0, min_lr=0.0, total_tokens=10, decay="constant")(7) == 3.0
    with pytest.raises(ConfigError, match="choose one of"):
        LRSchedule(1.0, 0.0, 10, decay="step")
