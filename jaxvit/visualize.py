"""Which tokens a token reduction kept or merged, drawn on the image (ToMe's and EViT's figures).

  python -m jaxvit.visualize --model deit_small_patch16_224 --reduction tome:r=13 --image dog.jpg \\
      --weights ckpt/deit_s --out tome.png
  python -m jaxvit.visualize --model deit_small_patch16_224 --reduction evit:keep_rate=0.7 --image dog.jpg \\
      --weights runs/evit --out evit.png

ToMe: each merged group of patches is filled with its mean colour (source tracing), per stage.
TCFormer's clustering merge: each DPC-kNN cluster filled with its mean colour.
EViT / Top-K and DynamicViT: the patches still represented after each pruning block; pruned ones are greyed out.
`--weights` is a converted timm checkpoint (`python -m jaxvit.convert`) or a training workdir;
without it the weights are random (the picture then shows the mechanism, not a trained model).
"""

import argparse
import sys

import numpy as np

from jaxvit.cpu import use_all_cores

KINDS = ("tome", "tcformer", "evit", "dynamicvit")  # merged groups (the first two) or kept patches


def load_image(path: str, size: tuple[int, int]) -> np.ndarray:
  """`[H, W, 3]` float in [0, 1]: the image resized (shorter side) and centre-cropped to `size`."""
  from PIL import Image
  image = Image.open(path).convert("RGB")
  scale = max(size[0] / image.height, size[1] / image.width)
  image = image.resize((max(size[1], round(image.width * scale)), max(size[0], round(image.height * scale))),
                       Image.BICUBIC)
  top, left = (image.height - size[0]) // 2, (image.width - size[1]) // 2
  return np.asarray(image.crop((left, top, left + size[1], top + size[0])), np.float32) / 255.0


def patch_groups(out, model, stages) -> list[np.ndarray]:
  """Per stage (block index), `[grid_h * grid_w]` group ids of the patches: for ToMe the merged token
  each patch went into; for EViT the kept token holding it, -1 once pruned (or fused)."""
  prefix, patches = model.num_prefix_tokens, model.grid[0] * model.grid[1]
  groups = []
  if model.reduction["kind"] == "tome":
    for i in stages:
      source = np.asarray(out[f"source{i}"][0])[:, prefix:]  # [tokens, patches]
      groups.append(source.argmax(axis=0))
    return groups
  owner = np.arange(patches)  # which current non-class token holds each patch (-1: gone)
  for i in range(max(stages) + 1):
    if f"kept{i}" in out:
      kept = np.asarray(out[f"kept{i}"][0])
      position = np.full(kept.max(initial=0) + patches + 2, -1)
      position[kept] = np.arange(len(kept))
      owner = np.where(owner >= 0, position[np.maximum(owner, 0)], -1)
    if i in stages:
      groups.append(owner.copy())
  return groups


def draw(image, groups, grid, titles, path: str, pruned_grey: bool):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  gh, gw = grid
  ph, pw = image.shape[0] // gh, image.shape[1] // gw
  fig, axes = plt.subplots(1, len(groups) + 1, figsize=(3 * (len(groups) + 1), 3.2))
  axes[0].imshow(image)
  axes[0].set_title("input")
  for ax, ids, title in zip(axes[1:], groups, titles):
    tiles = image.reshape(gh, ph, gw, pw, 3).transpose(0, 2, 1, 3, 4).reshape(gh * gw, ph, pw, 3)
    shown = tiles.copy()
    for g in np.unique(ids):
      members = ids == g
      if g < 0:
        shown[members] = 0.85 if pruned_grey else shown[members]
      elif not pruned_grey:
        shown[members] = tiles[members].mean(axis=(0, 1, 2))
    ax.imshow(shown.reshape(gh, gw, ph, pw, 3).transpose(0, 2, 1, 3, 4).reshape(gh * ph, gw * pw, 3))
    ax.set_title(title, fontsize=9)
  for ax in axes:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def visualize(model_name: str, reduction: dict, image_path: str, out_path: str, weights: str | None = None) -> list:
  import jax
  import jax.numpy as jnp
  from jaxvit.registry import create_model, pretrained_cfg
  from jaxvit.utils import init_variables
  if reduction.get("kind") not in KINDS:
    raise ValueError(f"--reduction kind {reduction.get('kind')!r} cannot be drawn; accepted: {KINDS}")
  if reduction["kind"] == "tome":
    reduction = dict(reduction, trace_source=True)
  model = create_model(model_name, reduction=reduction)
  variables = init_variables(model)  # DynamicViT's predictors included
  if weights:
    from jaxvit.train import init_from
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables["params"])
    params, _ = init_from.adapt(init_from.load_params(weights, field="--weights"), target, model,
                                error_prefix=f"--weights={weights!r} does not fit --model {model_name!r} with "
                                             f"--reduction")
    variables = {"params": params}
  image = load_image(image_path, (model.grid[0] * model.patch_size, model.grid[1] * model.patch_size))
  cfg = pretrained_cfg(model_name)
  normalized = (image - np.asarray(cfg["mean"], np.float32)) / np.asarray(cfg["std"], np.float32)
  logits, out = jax.jit(lambda v, x: model.apply(v, x))(variables, jnp.asarray(normalized)[None])
  if reduction["kind"] == "tcformer":  # one merge, before block `location`: each patch's cluster
    stages, groups = [model._reduction_config()["location"] - 1], [np.asarray(out["cluster_index"][0])]
  else:
    if reduction["kind"] == "tome":
      stages = [model.depth // 3 - 1, 2 * model.depth // 3 - 1, model.depth - 1]
    else:
      stages = sorted(int(k[4:]) for k in out if k.startswith("kept"))
    groups = patch_groups(out, model, stages)
  titles = [f"after block {i + 1}: {len(np.unique(g[g >= 0]))} tokens" for i, g in zip(stages, groups)]
  draw(image, groups, model.grid, titles, out_path, pruned_grey=reduction["kind"] not in ("tome", "tcformer"))
  return groups


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m jaxvit.visualize", description=__doc__.split("\n")[0])
  p.add_argument("--model", required=True)
  p.add_argument("--reduction", required=True, help="one reduction, e.g. tome:r=13 or evit:keep_rate=0.7")
  p.add_argument("--image", required=True)
  p.add_argument("--out", required=True, help="the PNG to write")
  p.add_argument("--weights", help="converted timm checkpoint or training workdir (default: random weights)")
  args = p.parse_args(argv)
  use_all_cores()
  from jaxvit.bench.run import parse_reductions
  try:
    reductions = parse_reductions(args.reduction)
    if len(reductions) != 1:
      raise ValueError(f"--reduction={args.reduction!r}: give exactly one reduction")
    visualize(args.model, reductions[0], args.image, args.out, args.weights)
  except (ValueError, FileNotFoundError) as err:
    sys.exit(f"error: {err}")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
