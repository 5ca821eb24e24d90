"""`nemotron4 generate`: sample text from a model, streamed to the terminal, or interactively."""

from __future__ import annotations

import argparse
import sys

from nemotron4.commands import DTYPES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate text from a model (streamed; --interactive for a prompt loop)",
        description="Generate text with a static KV cache. MODEL is a Hugging Face nemotron directory, a nemotron4 "
        "weights directory or a training run. The tokenizer is MODEL/tokenizer.model unless --tokenizer is given. "
        "On a GPU, --compile compiles one block and captures the decode step in a CUDA graph (for one prompt or a "
        "batch of them) and --quantize int8 halves the weight bytes, read by a Triton kernel at decode (the 15B "
        "model then fits a 24 GB GPU).",
    )
    p.add_argument("--model", required=True, help="model directory or training run")
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch); omit with --interactive")
    p.add_argument("--interactive", action="store_true", help="read prompts from the terminal until EOF")
    p.add_argument("--tokenizer", help="SentencePiece model (default: MODEL/tokenizer.model)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate per prompt (default 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample from the smallest set with this mass")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default auto: cuda when available)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--compile", action="store_true",
                   help="compile the decode step and replay it from a CUDA graph (seconds to set up per batch size)")
    p.add_argument("--quantize", choices=("int8",), default=None, help="weight-only int8 quantization")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the bos token")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    """The sampling options and prompts, before anything is loaded: one line naming the flag and what to pass."""
    from nemotron4.errors import ConfigError, UserError
    from nemotron4.inference.sampling import check_sampling

    try:
        check_sampling(args.temperature, args.top_k, args.top_p)
    except ConfigError as e:
        if str(e).startswith(f"temperature {args.temperature}:"):  # names the value already: "--temperature nan: ..."
            raise UserError(f"--{e}") from None
        flag = "--temperature" if "temperature" in str(e) else "--top-k" if "top_k" in str(e) else "--top-p"
        raise UserError(f"{flag}: {e}; see nemotron4 generate --help") from None
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens {args.max_new_tokens}: must be >= 0")
    for prompt in args.prompt or []:
        _check_prompt(prompt, "--prompt")


def _check_prompt(prompt: str, where: str) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates (argv) and would fail deep in the tokenizer."""
    from nemotron4.errors import UserError

    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = prompt[e.start:e.end].encode("utf-8", "surrogateescape")
        raise UserError(f"{where}: the prompt is not UTF-8 text (byte {bad[:1].hex(' ')} at character {e.start}); "
                        "pass UTF-8 (e.g. convert it with iconv -t UTF-8)") from None


def _load(args: argparse.Namespace):
    import torch

    from nemotron4.weights import load_config, load_model, load_tokenizer, pick_device

    device = str(pick_device(args.device))
    if args.compile and device == "cpu":
        print("note: --compile speeds up decoding on GPU (CUDA graphs); on CPU it only adds compile time",
              file=sys.stderr)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if "cuda" in device else torch.float32)
    tokenizer = load_tokenizer(args.model, load_config(args.model).vocab_size, args.tokenizer,  # before the weights
                               refuse_smaller=True)
    model = load_model(args.model, device=device, dtype=dtype).eval()
    if args.compile and "cuda" in device:  # the fast decode form (Triton linears, fused kernels), batches too
        from nemotron4.inference.decode_form import prepare_decode

        prepare_decode(model, int8=args.quantize == "int8")
    elif args.quantize == "int8":
        from nemotron4.inference import quantize_int8

        quantize_int8(model)
    return model, tokenizer


class _Streamer:
    """Prints one row's text as tokens arrive: decodes the whole row each time and prints what is new, so that
    byte-fallback pieces and leading spaces come out right."""

    def __init__(self, tokenizer, stop: set[int]) -> None:
        self.tokenizer, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.shown = ""
        self.done = False

    def __call__(self, step: int, tokens) -> None:
        if self.done:
            return
        tok = int(tokens[0])
        if tok in self.stop:
            self.done = True
            return
        self.ids.append(tok)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next byte piece
            return
        sys.stdout.write(text[len(self.shown):])
        sys.stdout.flush()
        self.shown = text


def _generate_one(model, tokenizer, prompt: str, args: argparse.Namespace) -> None:
    from nemotron4.inference import generate_tokens

    bos = [] if args.no_bos else [tokenizer.bos_id]
    stop = {tokenizer.eos_id}
    streamer = _Streamer(tokenizer, stop)
    generate_tokens(model, [bos + tokenizer.encode(prompt)], args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop_tokens=sorted(stop),
                    compile=args.compile, callback=streamer)
    sys.stdout.write("\n")


def run(args: argparse.Namespace) -> int:
    from nemotron4.errors import UserError

    if not args.prompt and not args.interactive:
        raise UserError("give --prompt TEXT (repeatable) or --interactive")
    _check_args(args)
    model, tokenizer = _load(args)
    if args.prompt and len(args.prompt) > 1:  # a batch: generated together, printed when done
        from nemotron4.inference import generate

        outs = generate(model, tokenizer, args.prompt, args.max_new_tokens, add_bos=not args.no_bos,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                        compile=args.compile)
        for prompt, out in zip(args.prompt, outs, strict=True):
            print(f"--- {prompt}\n{prompt}{out}")
        return 0
    for prompt in args.prompt or []:
        sys.stdout.write(prompt)
        _generate_one(model, tokenizer, prompt, args)
    if args.interactive:
        print("interactive: type a prompt and press Enter; Ctrl-D to quit", file=sys.stderr)
        while True:
            try:
                prompt = input("> ")
            except EOFError:
                print(file=sys.stderr)
                return 0
            except UnicodeDecodeError as e:  # stdin decoded strictly (a UTF-8 locale)
                byte = e.object[e.start:e.end][:1].hex()
                raise UserError(f"standard input: the prompt is not UTF-8 text (byte {byte} at byte {e.start}); type "
                                "or pipe UTF-8 (e.g. convert it with iconv -t UTF-8)") from None
            _check_prompt(prompt, "standard input")  # decoded with surrogateescape (the C / POSIX locale)
            if prompt.strip():
                _generate_one(model, tokenizer, prompt, args)
    return 0
