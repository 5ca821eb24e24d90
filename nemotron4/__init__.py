"""nemotron4: a PyTorch-native implementation of the Nemotron-4 15B system."""

from nemotron4.config import ConfigError, ModelConfig
from nemotron4.model import Nemotron4, build_model

__all__ = ["ConfigError", "ModelConfig", "Nemotron4", "build_model"]
__version__ = "0.1.0"
