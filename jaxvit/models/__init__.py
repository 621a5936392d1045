"""Model families; importing this package registers every model."""

from jaxvit.models import regnet, resnet, vit  # noqa: F401  (each registers its family's variants)
