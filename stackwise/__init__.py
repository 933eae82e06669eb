"""stackwise: a language-model training toolkit driven by one validated YAML file.

`import stackwise` is cheap: it imports the config schema (pydantic) and nothing heavier. `stackwise.Trainer`
(the engine behind `stackwise train`: `Trainer(cfg).fit()`) imports torch when first used. (`stackwise.train`
is the engine's package, so the notebook entry point is the class, not a function of that name.)
"""

from __future__ import annotations

from typing import Any

from .config import ConfigError, StackwiseConfig, load_config

__version__ = "0.1.0"
__all__ = ["ConfigError", "StackwiseConfig", "Trainer", "__version__", "load_config"]


def __getattr__(name: str) -> Any:
    if name == "Trainer":
        from .train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'stackwise' has no attribute {name!r}")
