"""Training dynamics equal HF's: from the same weights on the same batches, our trainer's step (with the fused
loss) and HF `NemotronForCausalLM` under the same optimizer give the same losses step after step (fp32, CPU)."""

import torch
import torch.nn.functional as F
import transformers
from helpers import small_hf_config

from nemotron4 import Nemotron4
from nemotron4.interop.hf import config_from_hf, our_name
from nemotron4.train.config import OptimSection
from nemotron4.train.fast import fused_cross_entropy_loss
from nemotron4.train.optim import build_optimizer
from nemotron4.train.step import train_step


def test_twelve_steps_of_training_match_transformers():
    cfg_hf = small_hf_config(vocab_size=97, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.NemotronForCausalLM(cfg_hf).train()
    with torch.device("meta"):
        ours = Nemotron4(config_from_hf(cfg_hf.to_dict()))
    ours.load_state_dict({our_name(k): v.clone() for k, v in hf.state_dict().items()}, assign=True)
    ours.init_buffers()
    batch = torch.randint(0, 97, (4, 33), generator=torch.Generator().manual_seed(1))
    data = [batch] * 12  # one batch over and over: the loss falls fast, a real trajectory to follow

    def hf_loss(model, batch):
        return F.cross_entropy(model(input_ids=batch[:, :-1]).logits.flatten(0, 1), batch[:, 1:].flatten())

    def train(model, loss_fn):
        opt = build_optimizer(model, OptimSection(fused="false"), torch.device("cpu"))
        return [train_step(model, opt, list(b.split(2)), 1e-2, 1.0, loss_fn=loss_fn).loss for b in data]

    a, b = train(hf, hf_loss), train(ours, fused_cross_entropy_loss)
    assert a[-1] < a[0] - 0.5  # it learned something: a real trajectory, not a flat line
    for step, (x, y) in enumerate(zip(a, b, strict=True)):
        assert abs(x - y) <= 1e-5 * abs(x), (step, x, y)
