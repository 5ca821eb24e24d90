"""The end-to-end CPU demo (`make demo`, `nemotron4 demo`): corpus, tokenizer, token files, pretraining with a
batch-size ramp, continued training, evaluation of both checkpoints, samples and a summary. See pipeline.py."""

from nemotron4.demo.config import DemoConfig, load_demo_config
from nemotron4.demo.pipeline import Demo

__all__ = ["Demo", "DemoConfig", "load_demo_config"]
