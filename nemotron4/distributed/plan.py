"""Memory per GPU and time to train, for a model on `gpus` GPUs at tensor-parallel size `tp` (pure arithmetic: no
process group, no model built). Backs `nemotron4 plan`.

Memory follows the paper's layout (docs/paper.md section 4: TP 8 + DP with Megatron's distributed optimizer, bf16):

    weights      2 bytes x params/GPU          bf16, sharded over tp (whole model; norms replicated)
    gradients    g bytes x params/GPU          bf16 (g = 2) or fp32 (g = 4) buffers, sharded over tp
    optimizer   12 bytes x params/GPU / dp     fp32 master copy + Adam m + v, sharded over dp (ZeRO-1)

Activations per micro-batch of b sequences of s tokens, per layer, with tensor + sequence parallelism (Korthikanti
et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 3, bytes):

    none       34 s b h / t + 5 a s^2 b / t   (every activation kept, attention scores included)
    selective  34 s b h / t                   (attention scores recomputed, or never stored: flash attention)
    full        2 s b h / t                   (only each layer's input; one layer's `selective` set live in backward)

plus the output layer's logits, 6 s b V / t (bf16 logits and their fp32 copy for the loss, vocabulary-parallel).
The 34 counts a GPT block with a 4h MLP; Nemotron-4's squared-ReLU 4h MLP without a gate matches it, and GQA's
smaller K/V makes it a slight over-estimate. Pipeline parallelism's extra in-flight micro-batches do not apply.

`layout="nemotron4"` is this package's own layout instead (what `nemotron4 train` holds; checked against the H200
measurements in bench/results/train_h200.json at tp = dp = 1, within 1%, tests/distributed/test_plan.py):

    weights      4 p / dp                     fp32 masters (FSDP2 shards them over dp), plus the compute copies:
                 + 2 P_blocks / t             without FSDP2: the blocks' bf16 matrices, cast once per step
                 + 2 p                        FSDP2 with cast-once (`apply_fsdp(keep_unsharded=True)`): every unit's
                                              all-gathered bf16 parameters, kept for the whole step
                 + 4 P_blocks / (L t) + 2 V h / t   FSDP2 without it: two blocks' gathered bf16 matrices in
                                              flight and the root's output projection (forward to backward)
    gradients    4 p / dp                     fp32; with FSDP2 and accumulation > 1, FSDP2 accumulates unsharded fp32
                 (FSDP2, accumulation > 1: 4 p)  gradients between micro-batches and makes the sharded ones only in
                                              the last backward's reduce-scatter (zero_grad frees them between
                                              steps), so at the peak (end of a later micro-batch's forward) 4 p
                                              (4 p / dp + 4 p without cast-once, as first planned: not re-measured)
    optimizer    8 p / dp                     Adam m and v
    activations  per layer and token, bytes: 4h/t + 2h + 2(q + 2kv)/t + 2q/t   (attention: fp32 residual, the normed
                 input gathered whole for the column-parallel weight gradient, q/k/v, attention output)
                 + 4h/t + 2h + 4f/t   (MLP: fp32 residual, gathered normed input, pre-activation and its square)
    logits       the fused loss (`train.fused_loss`, on by default), one rule at every tp (`fused_loss_bytes`;
                 one process: nemotron4.ops.cross_entropy; tp > 1: its vocabulary-parallel form,
                 nemotron4.distributed.vocab_loss), bytes, for this GPU's V / t vocabulary rows and a chunk of
                 c = min(4096, s b) tokens:
                 4 V h / t                    the fp32 output-weight gradient, made in forward
                 + 2 V h / t                  its compute-dtype (bf16) copy of the output weight (none under FSDP2,
                                              whose all-gathered weight is already bf16)
                 + (2 + l) c V / t            one chunk of logits (l = 2: in one process the compiled chunk reads
                                              the bf16 matmul output; l = 4: under TP the fp32 logits are held
                                              across the max and sum-exp all-reduces) and their bf16 gradient
                 + s b h (4 / t + 2 + 2)      the final-normed hidden states (fp32 under autocast, this rank's
                                              tokens), their bf16 copy gathered over the sequence (every token) and
                                              the bf16 hidden-state gradient (every token, before its
                                              reduce-scatter)
                 without the fused loss: 6 s b V / t (bf16 logits and their fp32 copy, vocabulary-parallel: the
                 megatron layout's term)

Time uses the FLOPs convention of `nemotron4.flops` (docs/paper.md section 4, 6N + 12 L T d per token): a stage of
`tokens` on `gpus` GPUs at MFU m takes tokens x flops/token / (gpus x peak x m). The report's three stages (Table 2)
give 0.8 + 0.4 + 11.9 = 13 days.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nemotron4.config import ModelConfig
from nemotron4.errors import ConfigError
from nemotron4.flops import H100_BF16_PEAK, flops_per_token
from nemotron4.schedules import parse_tokens

__all__ = ["PAPER_STAGES", "Memory", "Stage", "StagePlan", "fused_loss_bytes", "memory_per_gpu", "params_per_gpu",
           "parse_stages", "plan_stages"]

RECOMPUTE = ("none", "selective", "full")
LAYOUTS = ("megatron", "nemotron4")

# docs/paper.md section 4, Table 2: GPUs, global batch (sequences of 4096), tokens, MFU.
PAPER_STAGES = "768:384:200B:0.343 1536:768:200B:0.333 2304:1152:7.6T:0.305"


def params_per_gpu(cfg: ModelConfig, tp: int) -> float:
    """Parameters one GPU holds under TP: every matrix (embedding, projections, output) / tp; norms replicated."""
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    matrices = cfg.n_layers * (2 * cfg.dim * q + 2 * cfg.dim * kv + 2 * cfg.dim * cfg.ffn_dim)
    matrices += 2 * cfg.vocab_size * cfg.dim  # input embedding (vocab-parallel) + output projection
    norms = (cfg.n_layers * 2 + 1) * 2 * cfg.dim  # LayerNorm1P weight + bias
    return matrices / tp + norms


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def memory_per_gpu(
    cfg: ModelConfig, tp: int, dp: int, seq_len: int, micro_batch: int = 1, recompute: str = "selective",
    grad_bytes: int = 2, layout: str = "megatron", accumulation: int = 1, loss_chunk: int = 4096,
    fsdp: bool | None = None, cast_once: bool = True, fused_loss: bool = True,
) -> Memory:
    """Model state and activation bytes on one GPU (see the module docstring for the formulas). `layout`:
    "megatron" (the paper's) or "nemotron4" (this package's; `recompute` and `grad_bytes` do not apply; `fsdp`:
    FSDP2 wraps the model, default dp > 1, True for a wrapped one-rank mesh (parallel.force_wrap); `cast_once`:
    train.cast_weights_once; `fused_loss`: train.fused_loss)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "nemotron4":
        return _memory_nemotron4(cfg, tp, dp, seq_len, micro_batch, accumulation, loss_chunk,
                                 dp > 1 if fsdp is None else fsdp, cast_once, fused_loss)
    if recompute not in RECOMPUTE:
        raise ConfigError(f"recompute must be one of {', '.join(RECOMPUTE)}, got {recompute!r}")
    p = params_per_gpu(cfg, tp)
    s, b, h, a, t = seq_len, micro_batch, cfg.dim, cfg.n_heads, tp
    per_layer = {"none": 34 * s * b * h / t + 5 * a * s * s * b / t, "selective": 34 * s * b * h / t,
                 "full": 2 * s * b * h / t}[recompute]
    activations = cfg.n_layers * per_layer
    if recompute == "full":
        activations += 34 * s * b * h / t  # the layer being recomputed in backward
    return Memory(weights=2 * p, gradients=grad_bytes * p, optimizer=12 * p / dp, activations=activations,
                  logits=6 * s * b * cfg.vocab_size / t)


def _memory_nemotron4(cfg: ModelConfig, tp: int, dp: int, seq_len: int, micro_batch: int, accumulation: int,
                      loss_chunk: int, fsdp: bool, cast_once: bool, fused_loss: bool) -> Memory:
    p, t, h, f, V = params_per_gpu(cfg, tp), tp, cfg.dim, cfg.ffn_dim, cfg.vocab_size
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    blocks = cfg.n_layers * (2 * h * q + 2 * h * kv + 2 * h * f) / t  # the blocks' matrices on this GPU
    if not fsdp:
        weights, gradients = 4 * p / dp + 2 * blocks, 4 * p / dp
    elif cast_once:  # every unit's gathered bf16 parameters kept for the step; unsharded fp32 grads accumulated
        weights, gradients = 4 * p / dp + 2 * p, 4 * p if accumulation > 1 else 4 * p / dp
    else:  # two blocks' gathered bf16 matrices in flight, the root's output projection from forward to backward
        weights = 4 * p / dp + 2 * 2 * blocks / cfg.n_layers + 2 * V * h / t
        gradients = 4 * p / dp + (4 * p if accumulation > 1 else 0)
    normed = 2 * h  # under TP gathered whole (bf16) for the column-parallel weight gradient
    per_token = (4 * h / t + normed + 2 * (q + 2 * kv) / t + 2 * q / t) + (4 * h / t + normed + 4 * f / t)
    tokens = seq_len * micro_batch
    # the fused loss (under FSDP2 the all-gathered output weight is bf16 already: no copy of it) or the full logits
    logits = fused_loss_bytes(V, h, t, tokens, loss_chunk, weight_copy=not fsdp) if fused_loss else 6 * tokens * V / t
    return Memory(weights=weights, gradients=gradients, optimizer=8 * p / dp,
                  activations=cfg.n_layers * per_token * tokens, logits=logits)


def fused_loss_bytes(vocab: int, dim: int, tp: int, tokens: int, chunk: int = 4096, weight_copy: bool = True) -> float:
    """Bytes the fused linear cross-entropy holds on one GPU at its peak (inside the chunk loop, made in forward),
    for `tokens` tokens of a micro-batch (every rank loops over all of them) and this GPU's vocab / tp rows of the
    output weight; the module docstring's `logits` term, the same rule for one process (tp = 1) and the
    vocabulary-parallel loss. `weight_copy`: the loss casts the output weight to the compute dtype itself (False
    under FSDP2, whose gathered weight is bf16)."""
    V, h, t, c = vocab, dim, tp, min(chunk, tokens)
    logit_bytes = 2 if t == 1 else 4  # one compiled chunk reads the bf16 logits; under TP fp32 across all-reduces
    return (4 * V * h / t + (2 * V * h / t if weight_copy else 0) + (logit_bytes + 2) * c * V / t
            + tokens * h * (4 / t + 2 + 2))


@dataclass(frozen=True)
class Stage:
    """A stretch of training at one GPU count (a row of Table 2)."""

    gpus: int
    batch_size: int  # global batch, sequences
    tokens: int
    mfu: float  # 0..1


@dataclass(frozen=True)
class StagePlan:
    stage: Stage
    dp: int
    accumulation: int  # micro-batches per optimizer step on each replica
    iteration_s: float
    days: float
    memory: Memory

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self.stage), "dp": self.dp, "accumulation": self.accumulation,
                "iteration_s": self.iteration_s, "days": self.days, "memory_bytes": self.memory.as_dict()}


def parse_stages(text: str) -> list[Stage]:
    """"gpus:batch:tokens:mfu ..." (e.g. PAPER_STAGES; "paper" for it); mfu as a fraction or a percentage."""
    if text == "paper":
        text = PAPER_STAGES
    stages = []
    for item in text.split():
        parts = item.split(":")
        if len(parts) != 4:
            raise ConfigError(f"stage {item!r}: expected gpus:batch_size:tokens:mfu, e.g. 768:384:200B:0.343")
        gpus, batch, tokens, mfu = parts
        try:
            m = float(mfu)
            stages.append(Stage(int(gpus), int(batch), parse_tokens(tokens, f"stage {item}"), m / 100 if m > 1 else m))
        except ValueError as e:
            raise ConfigError(f"stage {item!r}: {e}") from e
    if not stages:
        raise ConfigError("no stages given")
    return stages


def plan_stages(
    cfg: ModelConfig, stages: list[Stage], tp: int, seq_len: int, micro_batch: int = 1, recompute: str = "selective",
    grad_bytes: int = 2, peak_flops: float = H100_BF16_PEAK, layout: str = "megatron", fused_loss: bool = True,
) -> list[StagePlan]:
    """Per stage: data-parallel size, accumulation steps, iteration time, days and memory per GPU."""
    fpt = flops_per_token(cfg, seq_len)
    out = []
    for st in stages:
        if st.gpus % tp:
            raise ConfigError(f"tp = {tp} does not divide {st.gpus} GPUs")
        dp = st.gpus // tp
        if st.batch_size % (dp * micro_batch):
            raise ConfigError(f"batch size {st.batch_size} is not a multiple of dp x micro-batch = {dp} x "
                              f"{micro_batch} at {st.gpus} GPUs")
        if not 0 < st.mfu <= 1:
            raise ConfigError(f"MFU must be in (0, 1], got {st.mfu}")
        per_s = st.gpus * peak_flops * st.mfu / fpt  # tokens per second
        accumulation = st.batch_size // (dp * micro_batch)
        out.append(StagePlan(
            stage=st, dp=dp, accumulation=accumulation,
            iteration_s=st.batch_size * seq_len / per_s, days=st.tokens / per_s / 86400,
            memory=memory_per_gpu(cfg, tp, dp, seq_len, micro_batch, recompute, grad_bytes, layout, accumulation,
                                  fused_loss=fused_loss),
        ))
    return out
