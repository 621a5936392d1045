"""Converts a timm checkpoint file into an orbax checkpoint jaxvit can train from.

  python -m jaxvit.convert --model deit_small_patch16_224 --checkpoint deit_s.safetensors \
      --out ckpt/deit_s [--img-size 384] [--num-classes 10] [--verify]
"""

import argparse
import sys
import time

import jax
import numpy as np

from jaxvit.convert import (ConversionError, convert_state_dict, family_of, head_keys, head_mismatch, read_state_dict,
                            save_converted)
from jaxvit.utils import input_shape


def verify(name, state_dict, model, variables, reset_head) -> float:
  """Max abs difference between timm and jaxvit on one random batch (pre-logits if the head was reset)."""
  import timm
  import torch
  family = family_of(model)
  kwargs = {field: getattr(model, field) for field in family.TIMM_ARGS}
  tm = timm.create_model(name, pretrained=False, num_classes=model.num_classes, **kwargs).eval()
  module = sys.modules[type(tm).__module__]
  filter_fn = getattr(module, "checkpoint_filter_fn", None)
  state = {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}
  state = filter_fn(state, tm) if filter_fn else state
  if reset_head:
    dropped = head_keys(model)
    state = {k: v for k, v in state.items() if k not in dropped}
  tm.load_state_dict(state, strict=not reset_head)
  images = np.random.RandomState(0).standard_normal(input_shape(model, 2)).astype(np.float32)
  with torch.no_grad():
    if reset_head:
      ref = tm.forward_head(tm.forward_features(torch.from_numpy(images).permute(0, 3, 1, 2)), pre_logits=True)
    else:
      ref = tm(torch.from_numpy(images).permute(0, 3, 1, 2))
  logits, out = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  got = out["pre_logits"] if reset_head else logits
  return float(np.abs(np.asarray(got) - ref.numpy()).max())


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m jaxvit.convert", description=__doc__.split("\n")[0])
  p.add_argument("--model", required=True, help="registered model name (timm's name), e.g. deit_small_patch16_224")
  p.add_argument("--checkpoint", required=True, help="timm weights: .safetensors, .pth, .pt or .bin")
  p.add_argument("--out", required=True, help="output directory (orbax checkpoint + jaxvit_model.json)")
  p.add_argument("--img-size", type=int, help="input size; position embeddings are resampled (CNNs take any size)")
  p.add_argument("--num-classes", type=int, help="classes; a head of another size is re-initialised")
  p.add_argument("--reduction", help="a token reduction the checkpoint was trained with, e.g. dynamicvit:keep_rate=0.7 "
                                     "(an official DynamicViT checkpoint: its score predictors convert too)")
  p.add_argument("--verify", action="store_true", help="compare with timm on a random batch (needs timm)")
  args = p.parse_args(argv)
  if args.verify and args.reduction:
    p.error("--verify compares with timm, which has no token reduction; drop one of --verify / --reduction")

  start = time.time()
  state = read_state_dict(args.checkpoint)
  overrides = {k: v for k, v in (("img_size", args.img_size), ("num_classes", args.num_classes)) if v is not None}
  try:
    if args.reduction:
      from jaxvit.bench.run import parse_reductions
      reductions = parse_reductions(args.reduction)
      if len(reductions) != 1:
        raise ValueError(f"--reduction {args.reduction!r}: expected one kind:key=value[,key=value...]")
      overrides["reduction"] = reductions[0]
    mismatch = head_mismatch(args.model, state, **overrides) if args.num_classes is not None else None
    model, variables = convert_state_dict(args.model, state, reset_head=bool(mismatch), **overrides)
  except (ConversionError, ValueError) as err:
    sys.exit(f"error: {err}")
  if mismatch:
    print(f"head re-initialised for {args.num_classes} classes: {mismatch}")
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  save_converted(args.out, variables, args.model, overrides, source=args.checkpoint)
  print(f"converted {args.model}: {n / 1e6:.2f}M parameters -> {args.out} ({time.time() - start:.1f}s)")
  if args.verify:
    diff = verify(args.model, state, model, variables, bool(mismatch))
    print(f"verify: max abs {'pre-logit' if mismatch else 'logit'} difference vs timm = {diff:.3g}")


if __name__ == "__main__":
  main()
