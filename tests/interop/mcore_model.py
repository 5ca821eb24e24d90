"""megatron-core's own GPTModel configured as Nemotron-4, on CPU: build, save and load with its dist_checkpointing,
and run its forward pass. Run as a script (a subprocess of the tests, or under torchrun for tensor parallelism), so
that megatron's global state and the CPU workarounds below never touch the test process.

    python mcore_model.py save OUT CONFIG_JSON [--load CKPT]   # random (or loaded) weights -> OUT/{plain,nemo1,...}
    python mcore_model.py logits CKPT CONFIG_JSON OUT_PT        # load CKPT into GPTModel, save logits of the tokens

Under torchrun the world is split into tensor-parallel groups of WORLD_SIZE / PP ranks and PP pipeline stages
(env PP, default 1; an odd layer count puts the extra layer on the first stage).

CPU workarounds for megatron-core's CUDA-only calls (0.16):
- `torch.cuda.current_device` (RoPE moves its inv_freq there) -> the CPU device; `torch.cuda.synchronize` -> no-op
  (dist_checkpointing's async writer calls it before writing);
- the causal mask is passed explicitly (`get_default_causal_mask` allocates on "cuda");
- the CUDA RNG tracker's `fork()` (entered by attention for dropout, which is 0 here) -> a null context;
- megatron's FusedLayerNorm (the one that implements zero-centred gamma: weight + 1) with apex's kernel replaced by
  `torch.nn.functional.layer_norm`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings

import torch

warnings.filterwarnings("ignore")
torch.cuda.current_device = lambda: torch.device("cpu")
torch.cuda.synchronize = lambda *a, **k: None


def tokens(cfg: dict) -> torch.Tensor:
    return torch.randint(0, cfg["vocab"], (2, 13), generator=torch.Generator().manual_seed(7))


def _setup(tp: int, pp: int) -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(20000 + os.getpid() % 20000))
        dist.init_process_group("gloo", rank=int(os.environ.get("RANK", 0)),
                                world_size=int(os.environ.get("WORLD_SIZE", 1)))
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.fusions import fused_layer_norm

    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)

    class _TorchLayerNormFn:  # stands in for apex's FusedLayerNormAffineFunction
        @staticmethod
        def forward(ctx, input, weight, bias, normalized_shape, eps): ...

        @staticmethod
        def apply(input, weight, bias, normalized_shape, eps):
            return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)

    fused_layer_norm.HAVE_FUSED_LAYER_NORM = True
    fused_layer_norm.FusedLayerNormAffineFunction = _TorchLayerNormFn
    tensor_parallel.get_cuda_rng_tracker().fork = lambda *a, **k: contextlib.nullcontext()


def build(cfg: dict):
    from megatron.core.activations import squared_relu
    from megatron.core.fusions.fused_layer_norm import FusedLayerNorm
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import (
        TransformerBlock,
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    pp = int(os.environ.get("PP", 1))
    uneven = {"num_layers_in_first_pipeline_stage": cfg["layers"] - cfg["layers"] // pp} if pp > 1 else {}
    tc = TransformerConfig(
        num_layers=cfg["layers"], hidden_size=cfg["hidden"], num_attention_heads=cfg["heads"],
        num_query_groups=cfg["groups"], kv_channels=cfg["kv_channels"], ffn_hidden_size=cfg["ffn"],
        activation_func=squared_relu, gated_linear_unit=False, add_bias_linear=False, add_qkv_bias=False,
        normalization="LayerNorm", layernorm_zero_centered_gamma=True, layernorm_epsilon=1e-5,
        hidden_dropout=0.0, attention_dropout=0.0, use_cpu_initialization=True, params_dtype=torch.float32,
        bias_dropout_fusion=False, apply_rope_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
        gradient_accumulation_fusion=False, tensor_model_parallel_size=torch.distributed.get_world_size() // pp,
        pipeline_model_parallel_size=pp, pipeline_dtype=torch.float32, **uneven,
    )
    layer = get_gpt_layer_local_spec()
    layer.submodules.input_layernorm = FusedLayerNorm
    layer.submodules.pre_mlp_layernorm = FusedLayerNorm
    block = ModuleSpec(module=TransformerBlock, submodules=TransformerBlockSubmodules(
        layer_specs=[layer] * get_num_layers_to_build(tc), layer_norm=FusedLayerNorm))
    from megatron.core import parallel_state

    stage, stages = parallel_state.get_pipeline_model_parallel_rank(), pp
    return GPTModel(tc, block, vocab_size=cfg["vocab"], max_sequence_length=cfg["seq"],
                    pre_process=stage == 0, post_process=stage == stages - 1,
                    share_embeddings_and_output_weights=False, position_embedding_type="rope",
                    rotary_percent=cfg["rotary_percent"], rotary_base=cfg.get("rotary_base", 10000)).eval()


def megatron_lm_args(cfg: dict):
    """The model part of the `args` Megatron-LM saves in common.pt."""
    return argparse.Namespace(
        num_layers=cfg["layers"], hidden_size=cfg["hidden"], ffn_hidden_size=cfg["ffn"],
        num_attention_heads=cfg["heads"], group_query_attention=True, num_query_groups=cfg["groups"],
        kv_channels=cfg["kv_channels"], max_position_embeddings=cfg["seq"], seq_length=cfg["seq"],
        position_embedding_type="rope", rotary_percent=cfg["rotary_percent"], rotary_base=cfg.get("rotary_base", 10000),
        normalization="LayerNorm", apply_layernorm_1p=True, norm_epsilon=1e-5, squared_relu=True, swiglu=False,
        add_bias_linear=False, add_qkv_bias=False, untie_embeddings_and_output_weights=True, init_method_std=0.02,
        padded_vocab_size=cfg["vocab"], params_dtype=torch.float32,
    )


def save_zarr(sd: dict, out: str, dtype: torch.dtype) -> None:
    """What megatron-core's (since removed) zarr strategy wrote: one directory per ShardedTensor key with a zarr v2
    `.zarray` (chunks = one rank's / one layer's shard, `compressor: null`, bf16 as dtype "bfloat16") and one raw
    C-order file per chunk named by its grid index; `metadata.json` with sharded_backend zarr; `common.pt`."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    common = {}
    for key, v in sd.items():
        if not isinstance(v, ShardedTensor):
            if not hasattr(v, "unique_key"):  # ShardedObjects (`_extra_state`) go elsewhere in megatron's layout
                common[key] = v
            continue
        folder = os.path.join(out, v.key)
        chunks = v.max_allowed_chunks()
        if not os.path.isdir(folder):
            os.makedirs(folder)
            zarray = {"chunks": list(chunks), "compressor": None,
                      "dtype": "bfloat16" if dtype == torch.bfloat16 else "<f4", "fill_value": None, "filters": None,
                      "order": "C", "shape": list(v.global_shape), "zarr_format": 2}
            with open(os.path.join(folder, ".zarray"), "w") as f:
                json.dump(zarray, f)
        index = ".".join(str(o // c) for o, c in zip(v.global_offset, chunks, strict=True))
        data = v.data.detach().to(dtype).contiguous().reshape(chunks)
        with open(os.path.join(folder, index), "wb") as f:
            f.write(data.view(-1).view(torch.uint8).numpy().tobytes())
    torch.save(common, os.path.join(out, "common.pt"))
    with open(os.path.join(out, "metadata.json"), "w") as f:
        json.dump({"sharded_backend": "zarr", "sharded_backend_version": 1, "common_backend": "torch",
                   "common_backend_version": 1}, f)


def load_into(model, ckpt: str, prefix: str = "") -> None:
    from megatron.core import dist_checkpointing

    sd = model.sharded_state_dict(prefix=prefix)
    loaded = dist_checkpointing.load(sd, ckpt)
    model.load_state_dict({k.removeprefix(prefix): v for k, v in loaded.items()}, strict=False)


def logits(model, cfg: dict) -> torch.Tensor:
    x = tokens(cfg)
    pos = torch.arange(x.shape[1]).unsqueeze(0).expand_as(x)
    mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)[None, None]
    with torch.no_grad():
        return model(x, pos, attention_mask=mask)


def main() -> int:
    cmd, path, cfg_json = sys.argv[1:4]
    cfg = json.loads(cfg_json)
    world = int(os.environ.get("WORLD_SIZE", 1))
    pp = int(os.environ.get("PP", 1))
    _setup(tp=world // pp, pp=pp)
    from megatron.core import dist_checkpointing

    model = build(cfg)
    if cmd == "save":
        if "--load" in sys.argv:
            load_into(model, sys.argv[sys.argv.index("--load") + 1])
        else:  # every tensor random (norms included), so that a swapped or mis-split tensor cannot hide
            torch.manual_seed(cfg.get("seed", 0))
            with torch.no_grad():
                for p in model.parameters():
                    p.normal_(0.0, 0.2)
        variants = {"plain": "", "nemo1": "model.", "nemo2": "module."} if world == 1 else {"plain": ""}
        for name, prefix in variants.items():
            out = os.path.join(path, name)
            os.makedirs(out, exist_ok=True)
            sd = model.sharded_state_dict(prefix=prefix)
            if name == "plain":
                sd["args"] = megatron_lm_args(cfg)
                sd["checkpoint_version"] = 3.0
            dist_checkpointing.save(sd, out)
        if world == 1:
            for name, dtype in (("zarr", torch.float32), ("zarr_bf16", torch.bfloat16)):
                os.makedirs(os.path.join(path, name))
                sd = model.sharded_state_dict()
                sd["args"] = megatron_lm_args(cfg)
                save_zarr(sd, os.path.join(path, name), dtype)
        if world == 1:
            torch.save({"tokens": tokens(cfg), "logits": logits(model, cfg)}, os.path.join(path, "logits.pt"))
    elif cmd == "logits":
        load_into(model, path)
        torch.save({"tokens": tokens(cfg), "logits": logits(model, cfg)}, sys.argv[4])
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
