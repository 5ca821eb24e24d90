"""The data path through the CLI: corpus build, tokenizer train, prepare, data inspect, then blend and loader."""

from __future__ import annotations

import json

import numpy as np
from helpers import fake_tree
from helpers import run_data_command as run_cli

from nemotron4.data.blend import BlendConfig, build_blend
from nemotron4.data.loader import DataLoader


def test_pipeline(tmp_path, capsys) -> None:
    cfg = fake_tree(tmp_path)
    roots = ["--python-stdlib", str(cfg.python_stdlib), "--doc-root", str(cfg.doc_root), "--man-root",
             str(cfg.man_root), "--locale-root", str(cfg.locale_root), "--include-root", str(cfg.include_root),
             "--code-root", str(cfg.code_roots[0]), "--max-file-bytes", "4000"]
    out = tmp_path / "corpus"
    assert run_cli(["corpus", "build", "--output", str(out), *roots]) == 0
    tok = tmp_path / "tok.model"
    assert run_cli(["tokenizer", "train", "--manifest", str(out / "manifest.json"), "--output", str(tok),
                    "--vocab-size", "400", "--sample-bytes", "100000", "--threads", "1"]) == 0
    tokens = tmp_path / "tokens"
    assert run_cli(["prepare", "--manifest", str(out / "manifest.json"), "--tokenizer", str(tok), "--output-dir",
                    str(tokens), "--quiet", "--workers", "1"]) == 0
    capsys.readouterr()
    assert run_cli(["data", "inspect", str(tokens / "en-man"), "--doc", "0", "--tokenizer", str(tok), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dtype"] == "uint16" and info["documents"] >= 1
    assert "frobnicate the bar" in info["doc"]["text"] and info["doc"]["tokens"][-1] == 3  # EOD
    assert info["doc"]["tokens"][0] == 2  # bos: documents start as evaluation prompts do
    ids = info["doc"]["tokens"]
    assert run_cli(["data", "inspect", str(tokens / "en-man"), "--doc", "0", "--max-ids", "4"]) == 0
    shown = capsys.readouterr().out.splitlines()[-1]
    assert shown.startswith(str(ids[:4])[:-1]) and shown.endswith(str(ids[-4:])[1:])
    assert f"... {len(ids) - 8} more" in shown
    blend = BlendConfig.from_token_manifest(tokens / "sources.json")
    ds = build_blend(blend, seq_len=8, num_samples=200, seed=0, cache_dir=tmp_path / "cache", vocab_size=400)
    batch = DataLoader(ds, micro_batch_size=2).next_batch(4)
    assert len(batch) == 2 and batch[0].shape == (2, 9) and int(batch[0].max()) < 400
    cats = np.array([s.category for s in ds.sources])[np.asarray(ds.dataset_index)]
    assert abs((cats == "english").mean() - 0.7) < 0.02
