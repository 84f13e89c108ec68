"""The centre's configuration: `load_config()` reads and validates `router.yaml`
into the immutable `Centre` of `router.config.model`; `ConfigError` lists every
problem found, one ``FILE:LINE:COL: error: MESSAGE`` line each."""
from router.config.loader import (ConfigError, check_config, default_config_path, load_config,
                                  parse_config)
from router.config.model import Centre

__all__ = ["Centre", "ConfigError", "check_config", "default_config_path", "load_config", "parse_config"]
