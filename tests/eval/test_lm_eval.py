"""LM-Evaluation-Harness integration: our `nemotron4` backend against lm-eval's own `hf` backend on the same
weights (exported with `to_hf`, with an HF tokenizer written from the same SentencePiece model)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import eval_docs as fake_docs
from helpers import write_mc_task

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.tasks import TaskManager  # noqa: E402

from nemotron4.eval.generation import GenerationRequest, generate_until  # noqa: E402
from nemotron4.eval.lm_eval import Nemotron4LM  # noqa: E402
from nemotron4.interop.hf import to_hf  # noqa: E402
from nemotron4.interop.hf_tokenizer import save_hf_tokenizer  # noqa: E402

TEXTS = [*fake_docs(60, seed=5), "  two leading", "trailing  ", "a\n\n  b\tc", "12345 x 6.78", "日本語 ok", "🙂",
         "    def f():\n        return 1\n", " ", "Ünïcödé café"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, tiny_model, sp_path) -> Path:
    path = to_hf(tiny_model, tmp_path_factory.mktemp("hf"))
    return save_hf_tokenizer(sp_path, path)


def test_hf_tokenizer_tokenizes_like_ours(hf_dir, sp):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(hf_dir))
    for text in TEXTS:
        assert hf.encode(text, add_special_tokens=False) == sp.encode(text), repr(text)
        assert hf.encode(text) == [sp.bos_id, *sp.encode(text)]  # bos in front, as our backend's tok_encode
        assert hf.decode(hf.encode(text, add_special_tokens=False)) == text
    assert (hf.bos_token_id, hf.eos_token_id) == (sp.bos_id, sp.eos_id)


def test_simple_evaluate_ours_equals_hf_backend(tmp_path, weights_dir, hf_dir):
    tm = TaskManager(include_path=str(write_mc_task(tmp_path / "tasks")), include_defaults=False)
    common = dict(tasks=["tiny_mc"], task_manager=tm, batch_size=4, device="cpu", log_samples=True,
                  bootstrap_iters=0)
    ours = lm_eval.simple_evaluate(model="nemotron4", model_args=f"pretrained={weights_dir}", **common)
    ref = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32", **common)
    assert ours["results"]["tiny_mc"]["acc,none"] == ref["results"]["tiny_mc"]["acc,none"]
    a = [r[0][0] for s in ours["samples"]["tiny_mc"] for r in s["resps"]]
    b = [r[0][0] for s in ref["samples"]["tiny_mc"] for r in s["resps"]]
    assert len(a) == len(b) == 24 * 4
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    greedy = [r[0][1] for s in ours["samples"]["tiny_mc"] for r in s["resps"]]
    assert greedy == [r[0][1] for s in ref["samples"]["tiny_mc"] for r in s["resps"]]


def test_registered_under_nemotron4():
    from lm_eval.api.registry import get_model

    assert get_model("nemotron4") is Nemotron4LM
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own backends still load


def _full_logprob(model, ids: list[int]) -> float:
    with torch.no_grad():
        logp = model(torch.tensor([ids[:-1]])).log_softmax(-1)[0]
    return logp.gather(-1, torch.tensor(ids[1:])[:, None]).sum().item()


def test_loglikelihood_rolling_scores_each_token_once(tiny_model, sp):
    lm = Nemotron4LM(tiny_model, tokenizer=sp, batch_size=3, max_length=16)
    docs = ["the water of people " * 6, "one", "time and two"]
    got = lm.loglikelihood_rolling([SimpleNamespace(args=(d,)) for d in docs], disable_tqdm=True)
    for d, g in zip(docs[1:], got[1:], strict=True):  # short documents: one window = one full forward
        assert g == pytest.approx(_full_logprob(tiny_model, [sp.bos_id, *sp.encode(d)]), abs=1e-4)
    assert len(sp.encode(docs[0])) > 16 and got[0] < got[1]  # long one went through several windows


def test_generate_until_stops_at_strings_and_keeps_order(tiny_model, sp):
    lm = Nemotron4LM(tiny_model, tokenizer=sp, batch_size=2)
    contexts = ["the water", "Year 1999.\n", "people of the time and", "one"]
    reqs = [SimpleNamespace(args=(c, {"until": ["e"], "max_gen_toks": 12})) for c in contexts]
    out = lm.generate_until(reqs, disable_tqdm=True)
    alone = [generate_until(tiny_model, sp, [GenerationRequest(c, ("e",), 12)])[0] for c in contexts]
    assert out == alone
    assert all("e" not in o for o in out)
