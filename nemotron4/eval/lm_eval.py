"""EleutherAI LM-Evaluation-Harness backend: our model as an lm-eval `LM`, registered as `nemotron4`.

    from nemotron4.eval.lm_eval import Nemotron4LM   # importing registers the model name "nemotron4"
    lm_eval.simple_evaluate(model="nemotron4", model_args="pretrained=DIR", tasks=["arc_easy"])

lm-eval 0.4.x finds models only in its own registry (no entry-point plugins for models), so its CLI needs our module
imported first; `python -m nemotron4.eval.lm_eval ...` is lm-eval's own CLI with the model registered:

    python -m nemotron4.eval.lm_eval --model nemotron4 --model_args pretrained=DIR --tasks arc_easy

Scoring mirrors lm-eval's HF backend (`HFLM`): contexts are encoded with bos in front (the released Nemotron
tokenizers add it), a continuation is encoded as `encode(context + continuation)[len(encode(context)):]`
(lm-eval's `TemplateLM._encode_pair`), requests are batched longest first with right padding. So the same weights
exported with `to_hf` and scored by `--model hf` give the same log-likelihoods (tests/eval/test_lm_eval.py).
One deliberate difference: `loglikelihood_rolling` encodes the document without bos and uses bos as the rolling
prefix; HFLM, through a tokenizer that adds bos, scores the document's own bos as a first token as well.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lm_eval.models  # noqa: F401  (registers lm-eval's own backends before ours: see `get_model`)
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from nemotron4.errors import UserError
from nemotron4.eval.generation import GenerationRequest, generate_until
from nemotron4.eval.scoring import continuation_logprobs, rolling_windows
from nemotron4.model import Nemotron4
from nemotron4.tokenizer import Tokenizer

__all__ = ["Nemotron4LM", "main"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _batch_size(value: int | str | None, max_batch_size: int | None) -> int:
    if value is None:
        return 8
    if isinstance(value, int):
        return value
    if str(value).startswith("auto"):  # lm-eval's "auto" / "auto:N": probing memory is not implemented
        chosen = max_batch_size or 8
        log.warning("batch_size=%s is not supported by the nemotron4 backend; using %d", value, chosen)
        return chosen
    return int(value)


@register_model("nemotron4")
class Nemotron4LM(TemplateLM):
    """lm-eval model over `Nemotron4` and our SentencePiece `Tokenizer`.

    model_args: pretrained (a nemotron4 weights directory, an HF nemotron directory, a training run or checkpoint,
    or a flavour name for a random model), tokenizer (a .model file; default: tokenizer.model beside the weights),
    dtype (float32, bfloat16, float16; default the checkpoint's), max_length (default the model's max_seq_len),
    max_gen_toks (default 256), add_bos_token (default True).
    """

    def __init__(
        self,
        pretrained: str | Nemotron4 = "tiny",
        tokenizer: str | Tokenizer | None = None,
        batch_size: int | str | None = 8,
        max_batch_size: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            log.warning("nemotron4 backend: ignoring model_args %s", sorted(kwargs))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():  # lm-eval's CLI asks for cuda by default
            log.warning("device %s requested but CUDA is not available; using cpu", device)
            device = "cpu"
        torch_dtype = None if dtype in (None, "auto") else _DTYPES.get(str(dtype))
        if dtype not in (None, "auto") and torch_dtype is None:
            raise UserError(f"dtype={dtype!r}: choose one of {', '.join(_DTYPES)}")
        if isinstance(pretrained, Nemotron4):
            self.model = pretrained
            if tokenizer is None:
                raise UserError("pass tokenizer= with a model object")
        else:
            from nemotron4.weights import load_model

            self.model = load_model(pretrained, device=device, dtype=torch_dtype)
        self.model.eval()
        from nemotron4.weights import check_tokenizer, load_tokenizer

        vocab = self.model.cfg.vocab_size
        self.tokenizer = (check_tokenizer(tokenizer, vocab) if isinstance(tokenizer, Tokenizer)
                          else load_tokenizer(str(pretrained), vocab, tokenizer))
        self._device = torch.device(device)
        self.batch_size = _batch_size(batch_size, max_batch_size)
        self._max_length = int(max_length) if max_length else self.model.cfg.max_seq_len
        self.max_gen_toks = int(max_gen_toks)
        self.add_bos_token = bool(add_bos_token)

    # --- what lm-eval asks of a model ---------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        """Stands in for an empty context (lm-eval's convention: bos when the tokenizer has one)."""
        return self.tokenizer.bos_id if self.tokenizer.bos_id >= 0 else self.tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.path)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids, with bos in front when `add_special_tokens` (default: `add_bos_token`) says so."""
        add = self.add_bos_token if add_special_tokens is None else add_special_tokens
        ids = self.tokenizer.encode(string)
        return [self.tokenizer.bos_id, *ids] if add and self.tokenizer.bos_id >= 0 else ids

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(tokens)

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]], disable_tqdm: bool = False,
        **kwargs: Any,
    ) -> list[tuple[float, bool]]:
        results = continuation_logprobs(
            self.model, [(ctx, cont) for _, ctx, cont in requests], batch_size=self.batch_size,
            max_len=self.max_length, progress=False if disable_tqdm else "loglikelihood",
        )
        for (key, _, _), res in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, res)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood: every token scored once, with as much context as the window allows."""
        windows: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        for i, req in enumerate(requests):
            (string,) = req.args
            doc = rolling_windows(self.tok_encode(string, add_special_tokens=False), self.prefix_token_id,
                                  self.max_length)
            windows += doc
            owner += [i] * len(doc)
        scores = continuation_logprobs(self.model, windows, batch_size=self.batch_size, max_len=self.max_length,
                                       progress=False if disable_tqdm else "loglikelihood_rolling")
        totals = [0.0] * len(requests)
        for i, (logp, _) in zip(owner, scores, strict=True):
            totals[i] += logp
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with do_sample) continuation up to the request's `until` strings, eos or
        max_gen_toks, through our KV-cache generation."""
        gen = [self._generation_request(*req.args) for req in requests]
        texts = generate_until(self.model, self.tokenizer, gen, batch_size=self.batch_size,
                               add_bos=self.add_bos_token, progress=False if disable_tqdm else "generate_until")
        for req, text in zip(requests, texts, strict=True):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return texts

    def _generation_request(self, context: str, gen_kwargs: dict[str, Any]) -> GenerationRequest:
        kw = dict(gen_kwargs)
        until = kw.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kw.pop("max_gen_toks", self.max_gen_toks))
        do_sample = bool(kw.pop("do_sample", False))
        temperature = float(kw.pop("temperature", 0.0) or 0.0)
        top_p = kw.pop("top_p", None)
        if not do_sample:
            temperature, top_p = 0.0, None  # lm-eval: do_sample False means greedy whatever the temperature
        elif temperature == 0.0:
            temperature = 1.0
        kw.pop("seed", None)
        if kw:
            log.warning("nemotron4 backend: ignoring generation kwargs %s", sorted(kw))
        return GenerationRequest(context, tuple(until), max_new, temperature, top_p)


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's own command line, with the `nemotron4` model registered (this module is imported)."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    # Run as `python -m`, this file is `__main__`: make later `import nemotron4.eval.lm_eval` (lm-eval's workers,
    # our own code) find this module instead of executing it again, which would register "nemotron4" twice.
    import sys

    sys.modules.setdefault("nemotron4.eval.lm_eval", sys.modules[__name__])
    main()
