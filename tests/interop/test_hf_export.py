"""The HF export behaves like us: a trained run keeps its tokenizer, `convert --to hf` ships it as files
`AutoTokenizer` reads (bos in front, as ours), and HF greedy `generate` equals `nemotron4 generate` token for token."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from helpers import (  # noqa: E402
    EVAL_GERMAN,
    EVAL_WORDS,
    QUICK,
    SOURCES,
    eval_docs,
    tiny_job,
    train_fake_tokenizer,
    write_tiny_corpus,  # noqa: E402
)

from nemotron4.cli import main  # noqa: E402
from nemotron4.errors import UserError  # noqa: E402
from nemotron4.inference import generate_tokens  # noqa: E402
from nemotron4.tokenizer import Tokenizer  # noqa: E402
from nemotron4.train.trainer import Trainer  # noqa: E402
from nemotron4.weights import find_tokenizer, load_model  # noqa: E402

PROMPTS = ["the of and", "Der die und", "Year 1999.\ndef f(x):"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run dir, tokenizer) of a tiny run trained 10 steps on token files `prepare` would have recorded the
    tokenizer for (a sources.json beside them names it)."""
    root = tmp_path_factory.mktemp("hfx")
    sp = train_fake_tokenizer(root / "sp" / "tokenizer.model", EVAL_WORDS, EVAL_GERMAN, max_words=80)
    write_tiny_corpus(root)
    names = [{"name": n, "path": n, "valid_path": f"{n}_valid"} for n in SOURCES]
    (root / "data/tiny/sources.json").write_text(json.dumps(
        {"format": "nemotron4-tokens", "version": 1, "tokenizer": str(sp), "sources": names}))
    run = root / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer.create(tiny_job(root, *QUICK), run).run()
    finally:
        torch.set_num_threads(before)
    return run, sp


def test_run_keeps_its_tokenizer_with_a_verified_digest(trained, tmp_path) -> None:
    run, sp = trained
    assert find_tokenizer(run) == run / "tokenizer.model"
    assert (run / "tokenizer.model").read_bytes() == sp.read_bytes()
    assert (run / "tokenizer.model").stat().st_mode & 0o777 == 0o644
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "tokenizer.model").write_bytes(sp.read_bytes() + b"x")
    (fake / "tokenizer.model.sha256").write_text((run / "tokenizer.model.sha256").read_text())
    with pytest.raises(UserError, match="does not match the digest"):
        find_tokenizer(fake)


def test_autotokenizer_on_the_export_encodes_as_ours(trained, tmp_path) -> None:
    run, sp = trained
    assert main(["convert", str(run), str(tmp_path / "hf"), "--to", "hf"]) == 0
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "hf" / name).is_file(), name
    ours = Tokenizer.load(sp)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    docs = eval_docs(40, seed=3) + ["  two  spaces\tand a tab\n\nnew lines", "Ünïcödé café — “quotes” 12345"]
    for doc in docs:
        assert hf(doc)["input_ids"] == [ours.bos_id, *ours.encode(doc)], doc
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (ours.bos_id, ours.eos_id)


def test_streaming_export_writes_the_tokenizer_files_too(trained, tmp_path) -> None:
    """The streaming path (a Megatron-Core / NeMo source, read tensor by tensor) ships the same tokenizer files."""
    run, sp = trained
    assert main(["convert", str(run), str(tmp_path / "mcore"), "--to", "megatron"]) == 0
    assert main(["convert", str(tmp_path / "mcore"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "hf" / name).is_file(), name
    ours = Tokenizer.load(sp)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for doc in eval_docs(20, seed=4) + ["  two  spaces\tand a tab\n\nnew lines"]:
        assert hf(doc)["input_ids"] == [ours.bos_id, *ours.encode(doc)], doc
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (ours.bos_id, ours.eos_id)
    # --tokenizer names the one to ship on this path too (before, it was ignored here)
    assert main(["convert", str(tmp_path / "mcore"), str(tmp_path / "hf2"), "--to", "hf", "--tokenizer",
                 str(sp)]) == 0
    assert (tmp_path / "hf2" / "tokenizer.json").is_file()


def test_hf_greedy_generate_equals_ours(trained, tmp_path, capsys) -> None:
    run, _ = trained
    assert main(["convert", str(run), str(tmp_path / "hf"), "--to", "hf"]) == 0
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ours = load_model(run).eval()
    sp = Tokenizer.load(find_tokenizer(run))
    n = 24
    for prompt in PROMPTS:
        ids = hf_tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = hf_model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
        hf_new = out[0, ids.shape[1]:].tolist()
        our_new = generate_tokens(ours, [ids[0].tolist()], n)[0]
        assert list(our_new) == hf_new, prompt
        assert len(set(hf_new)) > 2, hf_new  # a real continuation, not one token repeated
        capsys.readouterr()
        # the CLI, reading the run alone (no --tokenizer), prints the same text up to its first eos
        assert main(["generate", "--model", str(run), "--prompt", prompt, "--max-new-tokens", str(n),
                     "--device", "cpu"]) == 0
        shown = capsys.readouterr().out
        upto = hf_new[:hf_new.index(sp.eos_id)] if sp.eos_id in hf_new else hf_new
        assert shown == prompt + sp.decode(upto) + "\n"
