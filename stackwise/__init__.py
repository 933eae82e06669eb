"""stackwise: a language-model training toolkit driven by one validated YAML file.

`import stackwise` is cheap: it imports the config schema (pydantic) and nothing heavier.
"""

from .config import ConfigError, StackwiseConfig, load_config

__version__ = "0.1.0"
__all__ = ["ConfigError", "StackwiseConfig", "__version__", "load_config"]
