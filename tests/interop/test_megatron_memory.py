"""Converting a Megatron checkpoint holds about one tensor at a time: peak host memory grows by a bound set by the
largest tensor, not by the model (a 96-layer checkpoint of ~280 MB; RSS measured in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nemotron4 import ModelConfig
from nemotron4.interop.mcore_format import TorchDistWriter
from nemotron4.interop.megatron import KEY_MAP, config_to_megatron

CFG = ModelConfig(dim=256, n_layers=96, n_heads=4, n_kv_heads=2, head_dim=64, ffn_dim=1024, vocab_size=4096,
                  max_seq_len=128)
MB = 2**20

# Runs `nemotron4 convert` (or load_model) in a fresh interpreter, everything imported first and a tiny model built
# on `meta` once (torch loads ~150 MB of meta-device machinery on first use, whatever the model's size); prints how
# much the peak RSS grew during the call.
PROBE = """
import json, resource, sys
import torch, nemotron4, yaml, safetensors.torch
from nemotron4.cli import main
from nemotron4.interop import megatron, stream_write, hf, mcore_format, nemo
from nemotron4.weights import load_model
import nemotron4.model
with torch.device("meta"):
    nemotron4.model.Nemotron4(nemotron4.ModelConfig.from_name("tiny"))

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

try:  # reset the peak (VmHWM) to the current RSS, so that import-time peaks do not count
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, peak = status("VmRSS:"), lambda: status("VmHWM:")
except OSError:
    before, peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, lambda: (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
if sys.argv[1] == "convert":
    assert main(["convert", sys.argv[2], sys.argv[3], "--to", sys.argv[4]]) == 0
else:
    model = load_model(sys.argv[2])
print(json.dumps({"grew_bytes": peak() - before}))
"""


def shape(key: str) -> tuple[int, ...]:
    c = CFG
    qkv = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim
    return {"embedding.word_embeddings.weight": (c.vocab_size, c.dim), "output_layer.weight": (c.vocab_size, c.dim),
            "decoder.final_layernorm.weight": (c.dim,), "decoder.final_layernorm.bias": (c.dim,),
            "decoder.layers.self_attention.linear_qkv.weight": (qkv, c.dim),
            "decoder.layers.self_attention.linear_proj.weight": (c.dim, c.n_heads * c.head_dim),
            "decoder.layers.mlp.linear_fc1.weight": (c.ffn_dim, c.dim),
            "decoder.layers.mlp.linear_fc2.weight": (c.dim, c.ffn_dim)}.get(key, (c.dim,))


@pytest.fixture(scope="module")
def big_ckpt(tmp_path_factory) -> tuple[Path, int, int]:
    """A torch_dist checkpoint in megatron-core's layout (one chunk per layer), written chunk by chunk."""
    path = tmp_path_factory.mktemp("big") / "ckpt"
    writer = TorchDistWriter(path)
    g = torch.Generator().manual_seed(0)
    total = largest = 0
    for key in KEY_MAP:
        s = shape(key)
        layers = range(CFG.n_layers) if key.startswith("decoder.layers.") else [None]
        for i in layers:
            t = torch.randn(s, generator=g)
            if i is None:
                writer.add_chunk(key, t, (0,) * t.dim(), s)
            else:
                writer.add_chunk(key, t.unsqueeze(0), (i,) + (0,) * t.dim(), (CFG.n_layers, *s))
            total += t.numel() * 4
            largest = max(largest, t.numel() * 4)
    writer.close()
    (path / "model_config.yaml").write_text(yaml.safe_dump(config_to_megatron(CFG, torch.float32)))
    return path, total, largest


def probe(*args: str) -> int:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["grew_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize("to", ["nemotron4", "hf"])
def test_peak_memory_is_bounded_by_the_largest_tensor(big_ckpt, tmp_path, to):
    path, total, largest = big_ckpt
    bound = 6 * largest + 32 * MB  # the tensor being read (file bytes, loaded chunk, assembled copy), and slack
    assert total > 3 * bound  # the model would not fit under the bound: the test can fail
    grew = probe("convert", str(path), str(tmp_path / "out"), to)
    print(f"model {total / MB:.0f} MB, largest tensor {largest / MB:.1f} MB, peak RSS grew {grew / MB:.1f} MB")
    assert grew <= bound, f"peak RSS grew {grew / MB:.1f} MB > bound {bound / MB:.1f} MB (model {total / MB:.0f} MB)"


@pytest.mark.slow
def test_the_probe_sees_a_whole_model_load(big_ckpt):
    """The same measurement on load_model (which must hold the model) grows by about the model's size."""
    path, total, _ = big_ckpt
    assert probe("load", str(path)) >= 0.9 * total
