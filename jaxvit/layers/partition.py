"""MaxViT's two partitions of a feature map (Tu et al. 2022, arXiv:2204.01697, sec. 3.2, Fig. 3).

*Block* attention cuts `[B, H, W, C]` into non-overlapping `P x P` windows of neighbouring pixels (local
mixing); *grid* attention cuts it into a `G x G` grid whose `H / G x W / G` cells each hold pixels spaced
`H / G`, `W / G` apart (sparse, global mixing, "dilated"). Both return `[B * n, P * P, C]` token groups
that attention treats as independent sequences, tokens in row-major order; `*_reverse` undoes them.
`size` is an int or an `(h, w)` pair.
timm's `maxxvit.py` (`window_partition`, `grid_partition`) is the file followed.
"""


def _pair(size):
  return (size, size) if isinstance(size, int) else tuple(size)


def _check(h, w, size, kind):
  if h % size[0] or w % size[1]:
    raise ValueError(f"feature map {h}x{w} is not divisible by the {kind} partition size {size}; accepted: "
                     f"input sizes whose every stage's feature map is a multiple of {size}")


def window_partition(x, size: int):
  """`[B, H, W, C] -> [B * (H / P) * (W / P), P * P, C]`: `P x P` windows of neighbouring pixels."""
  b, h, w, c = x.shape
  (p, q) = size = _pair(size)
  _check(h, w, size, "block (window)")
  x = x.reshape(b, h // p, p, w // q, q, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, p * q, c)


def window_reverse(windows, size: int, hw):
  """Inverse of `window_partition`: `[B * n, P * P, C] -> [B, H, W, C]` for a map of `hw = (H, W)`."""
  (h, w), (p, q) = hw, _pair(size)
  c = windows.shape[-1]
  x = windows.reshape(-1, h // p, w // q, p, q, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, h, w, c)


def grid_partition(x, size: int):
  """`[B, H, W, C] -> [B * (H / G) * (W / G), G * G, C]`: each group is a `G x G` grid of pixels
  spaced `H / G`, `W / G` apart."""
  b, h, w, c = x.shape
  (p, q) = size = _pair(size)
  _check(h, w, size, "grid")
  x = x.reshape(b, p, h // p, q, w // q, c).transpose(0, 2, 4, 1, 3, 5)
  return x.reshape(-1, p * q, c)


def grid_reverse(groups, size: int, hw):
  """Inverse of `grid_partition`: `[B * n, G * G, C] -> [B, H, W, C]` for a map of `hw = (H, W)`."""
  (h, w), (p, q) = hw, _pair(size)
  c = groups.shape[-1]
  x = groups.reshape(-1, h // p, w // q, p, q, c).transpose(0, 3, 1, 4, 2, 5)
  return x.reshape(-1, h, w, c)
