"""Sequence pooling before the classifier: class token (ViT) or global average (GAP, CPVT / MAE)."""

POOLS = ("token", "avg", "max", "avgmax")


def pool_tokens(x, kind: str, num_prefix_tokens: int):
  """`[B, N, D] -> [B, D]`: `token` takes token 0; `avg` / `max` / `avgmax` pool the patch tokens."""
  patches = x[:, num_prefix_tokens:]
  if kind == "token":
    return x[:, 0]
  if kind == "avg":
    return patches.mean(axis=1)
  if kind == "max":
    return patches.max(axis=1)
  if kind == "avgmax":
    return 0.5 * (patches.mean(axis=1) + patches.max(axis=1))
  raise ValueError(f"global_pool={kind!r}; accepted: {POOLS}")
