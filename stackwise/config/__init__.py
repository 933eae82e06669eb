"""stackwise's typed config: pure pydantic v2, importable without torch.

from stackwise.config import StackwiseConfig, load_config
cfg = StackwiseConfig.from_yaml("config.yaml", overrides=["training.lr=1e-3"])
"""

from .errors import ConfigError, Issue, Location
from .loader import LoadResult, load_config, load_mapping
from .schema import SECTIONS, StackwiseConfig

__all__ = [
    "SECTIONS",
    "ConfigError",
    "Issue",
    "LoadResult",
    "Location",
    "StackwiseConfig",
    "load_config",
    "load_mapping",
]
