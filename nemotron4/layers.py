"""The package's layer order, lowest first: a module may import modules of its own layer or of a lower one, never
of a higher one, and no import chain may come back to where it started. tests/unit/test_layering.py walks every
import of the package (function-level ones included) and holds the code to this; docs/architecture.md says why the
layers are in this order.

Data, not code: nothing imports this module but that test (and it imports nothing).
"""

LAYERS: tuple[tuple[str, ...], ...] = (
    # UserError / ConfigError: what every layer raises; this table; crash-safe file writes and OSError messages
    ("nemotron4.errors", "nemotron4.layers", "nemotron4.fsio"),
    ("nemotron4.config", "nemotron4.schedules", "nemotron4.flops"),  # plain values and arithmetic (no torch.nn)
    ("nemotron4.ops", "nemotron4.model", "nemotron4.__init__"),  # the network: torch only
    ("nemotron4.tokenizer", "nemotron4.data"),  # text -> tokens -> token files -> blended samples
    ("nemotron4.checkpoint", "nemotron4.interop"),  # on-disk formats: DCP checkpoints, Hugging Face (and others)
    ("nemotron4.weights",),  # load_model / load_config / find_tokenizer from any model source
    ("nemotron4.distributed",),  # the parallel layout, mesh, TP + FSDP2, plan arithmetic
    ("nemotron4.train",),  # the run config, the step, the trainer
    ("nemotron4.inference",),  # KV cache, sampling, generation
    ("nemotron4.eval",),  # perplexity, translation, HumanEval, the lm-eval backend
    ("nemotron4.demo",),  # the end-to-end miniature recipe
    ("nemotron4.commands", "nemotron4.cli"),  # the CLI: one file per command
)
