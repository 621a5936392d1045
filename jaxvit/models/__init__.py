"""Model families, one module each; importing this package registers every model."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")  # each module registers its family's variants
