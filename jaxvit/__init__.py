"""jaxvit: lightweight Vision Transformers in JAX / Flax."""

from jaxvit import models  # noqa: F401  (registers every model family)
from jaxvit.registry import (create_model, is_model, list_families, list_models, model_family, pretrained_cfg,
                             register_model)
from jaxvit.utils import count_params, init_variables

__version__ = "0.1.0"
