"""nemotron4: a PyTorch-native implementation of the Nemotron-4 15B system."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ConfigError", "ModelConfig", "Nemotron4", "build_model"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from nemotron4.config import ConfigError, ModelConfig
    from nemotron4.model import Nemotron4, build_model

# Imported on first use (PEP 562), so that `import nemotron4.<module>` does not pull torch in: the command line
# answers --help and checks its inputs (e.g. `eval --tasks` offline) before torch is loaded.
_LAZY = {"ConfigError": "nemotron4.config", "ModelConfig": "nemotron4.config", "Nemotron4": "nemotron4.model",
         "build_model": "nemotron4.model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nemotron4' has no attribute {name!r}")
