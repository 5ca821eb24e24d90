"""Property-based tests (hypothesis) of the pieces every run leans on: the blend order, the batch-size ramp, and the
config parser (random valid configs round-trip through TOML; random unknown keys and wrong types are refused,
naming the key)."""

from __future__ import annotations

import dataclasses
import tempfile
import tomllib
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import TINY_TOML
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron4.data.blend import blending_indices
from nemotron4.errors import ConfigError
from nemotron4.schedules import BatchRamp, format_tokens
from nemotron4.train import config as config_module
from nemotron4.train.config_io import job_from_dict, load_job, save_job

SETTINGS = settings(max_examples=60, deadline=None)
TINY_RAW = tomllib.loads(TINY_TOML.read_text())

# ---- blend order -------------------------------------------------------------------------------------------------

shares_st = st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 100.0)), min_size=1, max_size=6).filter(any)


@SETTINGS
@given(weights=shares_st, n=st.integers(1, 3000))
def test_blend_prefix_shares_within_bounds(weights: list[float], n: int) -> None:
    shares = np.array(weights) / sum(weights)
    ids, ks = blending_indices(shares, n)
    assert len(ids) == len(ks) == n
    assert ids.min() >= 0 and ids.max() < len(shares) and np.all(shares[ids] > 0)  # in range, never a 0-share source
    counts = np.cumsum(np.eye(len(shares), dtype=np.int64)[ids], axis=0)  # (n, sources): samples per prefix
    target = np.arange(1, n + 1)[:, None] * shares
    # Each source's count at every prefix is within one sample, plus half a sample per source sharing the step.
    assert np.all(np.abs(counts - target) <= 1 + shares * len(shares) / 2 + 1e-9)
    for d in range(len(shares)):  # each source's samples are taken in order 0, 1, 2, ... (every index in range)
        np.testing.assert_array_equal(ks[ids == d], np.arange(int((ids == d).sum())))


@SETTINGS
@given(weights=shares_st, n=st.integers(1, 500), more=st.integers(0, 500))
def test_blend_is_deterministic_and_prefix_stable(weights: list[float], n: int, more: int) -> None:
    shares = np.array(weights) / sum(weights)
    a, b = blending_indices(shares, n), blending_indices(shares.copy(), n)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    longer = blending_indices(shares, n + more)  # a longer run sees the same first n samples
    assert np.array_equal(longer[0][:n], a[0]) and np.array_equal(longer[1][:n], a[1])


# ---- batch-size ramp ---------------------------------------------------------------------------------------------


@st.composite
def ramps(draw: st.DrawFn) -> list[tuple[int, int]]:
    gaps = draw(st.lists(st.integers(1, 10**12), min_size=0, max_size=5))
    thresholds = [0, *np.cumsum(gaps).tolist()]
    sizes = sorted(draw(st.lists(st.integers(1, 4096), min_size=len(thresholds), max_size=len(thresholds))))
    return list(zip(thresholds, sizes, strict=True))


@SETTINGS
@given(stages=ramps(), probes=st.lists(st.integers(0, 6 * 10**12), max_size=20))
def test_batch_ramp_changes_exactly_at_thresholds(stages: list[tuple[int, int]], probes: list[int]) -> None:
    ramp = BatchRamp.parse(" ".join(f"{format_tokens(t)}:{s}" for t, s in stages))
    assert BatchRamp.parse(str(ramp)) == ramp and ramp.stages == tuple(stages)
    for (t, s), (_, before) in zip(stages[1:], stages, strict=False):
        assert ramp.size_at(t) == s and ramp.size_at(t - 1) == before
    values = [ramp.size_at(p) for p in sorted(probes)]
    assert values == sorted(values)  # monotone for an increasing ramp
    for p in probes:
        assert ramp.size_at(p) == [s for t, s in stages if t <= p][-1]


@SETTINGS
@given(stages=ramps(), micro=st.integers(1, 16), dp=st.integers(1, 8))
def test_batch_divisibility_errors(stages: list[tuple[int, int]], micro: int, dp: int) -> None:
    bad = [s for _, s in stages if s % (micro * dp)]
    raw = {**TINY_RAW, "train": {**TINY_RAW["train"], "micro_batch_size": micro},
           "phases": [{**TINY_RAW["phases"][0], "batch_size": [f"{t}:{s}" for t, s in stages]},
                      {**TINY_RAW["phases"][1], "batch_size": micro * dp}]}
    if bad:
        with pytest.raises(ConfigError, match=rf"phases\.0\.batch_size: global batch {bad[0]} is not divisible"):
            job_from_dict(raw).check_batches(dp)
    else:
        job = job_from_dict(raw)
        job.check_batches(dp)
        assert job.phases[0].batch_size.stages == tuple(stages)


# ---- config parser -----------------------------------------------------------------------------------------------

POSITIVE = st.integers(1, 10**6)
FINITE = st.floats(1e-9, 1e3, allow_nan=False)


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    raw = tomllib.loads(TINY_TOML.read_text())
    micro = draw(st.integers(1, 8))
    raw["train"].update(seq_len=draw(st.sampled_from([16, 32, 64])), micro_batch_size=micro,
                        seed=draw(st.integers(0, 2**31)), dtype=draw(st.sampled_from(["auto", "bf16", "fp32"])),
                        compile=draw(st.booleans()), max_nonfinite_in_row=draw(POSITIVE))
    raw["optim"].update(eps=draw(FINITE), weight_decay=draw(FINITE), grad_clip=draw(FINITE),
                        betas=[draw(st.floats(0, 0.999)), draw(st.floats(0, 0.999))])
    raw["checkpoint"] = {"interval": draw(st.integers(0, 10**5)), "keep_last": draw(st.integers(0, 10))}
    raw["metrics"].update(eval_interval=draw(st.integers(0, 10**4)), progress_bar=draw(st.booleans()))
    for phase in raw["phases"]:
        phase["tokens"] = draw(st.integers(10**3, 10**13))
        phase["warmup_tokens"] = draw(st.integers(0, phase["tokens"]))
        phase["decay"] = draw(st.sampled_from(["cosine", "linear", "wsd", "constant"]))
        phase["min_lr"] = draw(st.floats(0, 1e-3))
        phase["batch_size"] = micro * draw(st.integers(1, 64))
        for source in phase["blend"]["sources"]:
            if "weight" in source:
                source["weight"] = draw(st.floats(0.01, 100))
    raw["phases"][0]["lr"] = draw(FINITE)
    raw["phases"][0]["min_lr"] = draw(st.floats(0, raw["phases"][0]["lr"]))  # the LR decays down to min_lr
    return raw


@settings(max_examples=40, deadline=None)
@given(raw=valid_configs())
def test_random_valid_configs_round_trip_through_toml(raw: dict[str, Any]) -> None:
    job = job_from_dict(raw)
    job.validate()
    with tempfile.TemporaryDirectory() as d:
        save_job(job, Path(d) / "config.toml")
        assert load_job(Path(d) / "config.toml") == job


def _fields() -> list[tuple[str, dict[str, Any], str, Any]]:
    """(section path, the raw table holding it, field name, field type) for every scalar field of the config."""
    out = []
    for section in ("train", "optim", "checkpoint", "metrics", "parallel"):
        cls = {f.name: f for f in dataclasses.fields(config_module.JobConfig)}[section].default_factory
        hints = typing.get_type_hints(cls)
        out += [(section, f.name, hints[f.name]) for f in dataclasses.fields(cls)
                if hints[f.name] in (int, float, str, bool)]
    hints = typing.get_type_hints(config_module.PhaseSection)
    out += [("phases.0", n, hints[n]) for n in ("name", "min_lr", "decay", "decay_fraction", "reset_optimizer")]
    return out


FIELDS = _fields()
WRONG = {int: st.one_of(st.text(max_size=5), st.booleans(), st.floats(0.5, 9.5), st.lists(st.integers(), max_size=2)),
         float: st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.floats(), max_size=2)),
         str: st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans()),
         bool: st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=False))}


def _table(raw: dict[str, Any], path: str) -> dict[str, Any]:
    node: Any = raw
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    return node


@SETTINGS
@given(field=st.sampled_from(FIELDS), data=st.data())
def test_wrong_types_raise_config_error_naming_the_key(field: tuple[str, str, Any], data: st.DataObject) -> None:
    section, name, tp = field
    raw = tomllib.loads(TINY_TOML.read_text())
    _table(raw, section)[name] = value = data.draw(WRONG[tp])
    assert not (tp is float and isinstance(value, int) and not isinstance(value, bool))
    with pytest.raises(ConfigError, match=rf"^{section}\.{name}: expected {tp.__name__}, got "):
        job_from_dict(raw)


@SETTINGS
@given(section=st.sampled_from(["", "train", "optim", "checkpoint", "metrics", "parallel", "phases.1",
                                "phases.0.blend", "phases.1.blend.sources.2"]),
       key=st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True), value=st.integers())
def test_unknown_keys_raise_config_error_naming_the_key(section: str, key: str, value: int) -> None:
    raw = tomllib.loads(TINY_TOML.read_text())
    table = _table(raw, section) if section else raw
    if key in table or key in _known(section):
        return
    table[key] = value
    full = f"{section}.{key}" if section else key
    with pytest.raises(ConfigError, match=rf"unknown keys? .*\b{full}\b"):
        job_from_dict(raw)


def _known(section: str) -> set[str]:
    cls: Any = config_module.JobConfig
    for part in section.split(".") if section else []:
        if part.isdigit():
            continue
        hint = typing.get_type_hints(cls)[part]
        cls = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
    return {f.name for f in dataclasses.fields(cls)}
