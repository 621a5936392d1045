"""Model families; importing this package registers every model."""

from jaxvit.models import vit  # noqa: F401  (registers the ViT / DeiT family)
