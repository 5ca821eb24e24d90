from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import data_docs as fake_docs
from helpers import write_jsonl

from nemotron4.data.indexed import IndexedDataset
from nemotron4.data.prepare import prepare
from nemotron4.errors import UserError


def test_prepare_jsonl_text_and_folders(tmp_path, tokenizer_path, tokenizer) -> None:
    docs = fake_docs(30)
    write_jsonl(tmp_path / "in" / "a.jsonl", docs[:20], field="content")
    (tmp_path / "in" / "sub").mkdir()
    for i, d in enumerate(docs[20:]):
        (tmp_path / "in" / "sub" / f"{i}.txt").write_text(d)
    r = prepare([tmp_path / "in"], tokenizer_path, tmp_path / "out" / "x", text_field="content", workers=2,
                progress=False)
    assert r.documents == 30 and r.problems == {}
    ds = IndexedDataset(tmp_path / "out" / "x")
    assert ds.dtype == np.uint16 and len(ds) == 30 and ds.num_tokens == r.tokens
    got = sorted(tokenizer.decode(ds[i][1:-1]) for i in range(30))
    assert got == sorted(docs)
    assert all(ds[i][0] == tokenizer.bos_id and ds[i][-1] == tokenizer.eos_id for i in range(30))
    bare = prepare([tmp_path / "in"], tokenizer_path, tmp_path / "out" / "y", text_field="content", workers=1,
                   progress=False, add_bos=False)
    plain = IndexedDataset(tmp_path / "out" / "y")
    assert bare.tokens == r.tokens - 30 and all(tokenizer.bos_id not in plain[i] for i in range(30))


def test_output_does_not_depend_on_workers(tmp_path, tokenizer_path) -> None:
    write_jsonl(tmp_path / "a.jsonl", fake_docs(300))
    for w in (1, 2):
        prepare([tmp_path / "a.jsonl"], tokenizer_path, tmp_path / f"w{w}", workers=w, batch_bytes=2000,
                progress=False)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"w1{ext}").read_bytes() == (tmp_path / f"w2{ext}").read_bytes()


def test_bad_input_is_counted_per_file_and_the_run_finishes(tmp_path, tokenizer_path) -> None:
    good = fake_docs(5)
    lines = [json.dumps({"text": d}).encode() for d in good]
    lines.insert(1, b'{"text": "bad \xff\xfe utf8"}')
    lines.insert(2, json.dumps({"body": "no text field"}).encode())
    lines.insert(3, json.dumps({"text": "   \n "}).encode())
    lines.insert(4, b"{not json")
    lines.insert(5, json.dumps({"text": 42}).encode())
    (tmp_path / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "broken.jsonl.gz").write_bytes(b"this is not gzip data")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    r = prepare([tmp_path / "mixed.jsonl", tmp_path / "broken.jsonl.gz", tmp_path / "latin1.txt"], tokenizer_path,
                tmp_path / "out", workers=2, progress=False)
    by_name = {f.path.rsplit("/", 1)[-1]: f for f in r.files}
    assert by_name["mixed.jsonl"].documents == 5
    assert by_name["mixed.jsonl"].problems == {"invalid_utf8": 1, "missing_field": 2, "empty": 1, "bad_json": 1}
    assert by_name["broken.jsonl.gz"].problems == {"unreadable": 1} and by_name["broken.jsonl.gz"].error
    assert by_name["latin1.txt"].problems == {"invalid_utf8": 1}
    assert len(IndexedDataset(tmp_path / "out")) == 5


def test_nothing_readable_is_an_error_and_writes_nothing(tmp_path, tokenizer_path) -> None:
    write_jsonl(tmp_path / "a.jsonl", ["x", "y"], field="other")
    with pytest.raises(UserError, match="no documents"):
        prepare([tmp_path / "a.jsonl"], tokenizer_path, tmp_path / "out", workers=1, progress=False)
    assert not list(tmp_path.glob("out*"))


def test_parquet(tmp_path, tokenizer_path, tokenizer) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    docs = fake_docs(10)
    pq.write_table(pa.table({"text": docs[:9] + [None], "id": list(range(10))}), tmp_path / "a.parquet")
    r = prepare([tmp_path / "a.parquet"], tokenizer_path, tmp_path / "out", workers=1, progress=False)
    assert r.documents == 9 and r.problems == {"missing_field": 1}
    assert tokenizer.decode(IndexedDataset(tmp_path / "out")[0][:-1]) == docs[0]
