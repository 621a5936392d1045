"""A ViT's `reduction=dict(kind=..., ...)` as per-block `Block` fields, the same keep counts at every call:
static shapes (DESIGN.md, dynamic networks). Errors name the key and what is accepted."""

from jaxvit.dynamic import ats, dynamicvit, evit, evo_vit, idlevit, tcformer, tofu, tome

# reduction kind -> (accepted keys, required keys)
REDUCTIONS = {"tome": (("r", "prop_attn", "trace_source"), ("r",)),
              "evit": (("keep_rate", "locations", "fuse_token"), ()),
              "dynamicvit": (("keep_rate", "locations"), ()),
              "ats": (("n_tokens", "locations"), ()),
              "patch_merger": (("tokens", "location"), ()),
              "evo_vit": (("keep_rate", "stages", "tradeoff"), ()),
              "idlevit": (("keep_rate", "locations"), ()),
              "tofu": (("r", "merge_from", "prop_attn"), ("r",)),
              "tcformer": (("tokens", "location", "k"), ())}
CLASS_TOKEN_KINDS = ("evit", "dynamicvit", "ats", "evo_vit", "idlevit")  # rank the patches by the class token


def encoder_reduction(model) -> dict:
  """`dict(kind, blocks=(per-block Block fields, ...), ...)` for a `VisionTransformer`'s `reduction`."""
  cfg = dict(model.reduction)
  kind = cfg.pop("kind", None)
  if kind not in REDUCTIONS:
    raise ValueError(f"{type(model).__name__}: reduction kind={kind!r}; accepted: {tuple(REDUCTIONS)}")
  accepted, required = REDUCTIONS[kind]
  unknown, missing = sorted(set(cfg) - set(accepted)), sorted(set(required) - set(cfg))
  if unknown or missing:
    raise ValueError(f"{type(model).__name__}: reduction={model.reduction!r} needs {list(required)} and accepts "
                     f"{list(accepted)} (got {unknown or 'no ' + ', '.join(missing)})")
  if model.scan:
    raise ValueError(f"{type(model).__name__}: scan=True needs the same token count in every block; "
                     f"token reduction needs scan=False")
  if kind in CLASS_TOKEN_KINDS and (not model.class_token or model.num_prefix_tokens != 1):
    raise ValueError(f"{type(model).__name__}: reduction kind={kind!r} needs exactly one prefix token, the class "
                     f"token (class_token=True, no distillation or register tokens)")
  return _PLANNERS[kind](model, cfg)


def _tome(model, cfg) -> dict:
  blocks = [dict(merge_r=r, prop_attn=bool(cfg.get("prop_attn", True)),
                 protected=(model.class_token, model.dist_token)) for r in tome.parse_r(model.depth, cfg["r"])]
  return dict(kind="tome", blocks=tuple(blocks), trace_source=bool(cfg.get("trace_source", False)))


def _evit(model, cfg) -> dict:
  fuse = bool(cfg.get("fuse_token", False))
  keep = evit.kept_tokens(model.grid[0] * model.grid[1] + model.num_prefix_tokens - 1, model.depth,
                          cfg.get("keep_rate", 0.7), cfg.get("locations", (3, 6, 9)), fuse)
  return dict(kind="evit", blocks=tuple(dict(keep_tokens=k, fuse_token=fuse) for k in keep))


def _dynamicvit(model, cfg) -> dict:
  locations = tuple(cfg.get("locations", (3, 6, 9)))
  if any(not 0 <= i < model.depth for i in locations) or list(locations) != sorted(set(locations)):
    raise ValueError(f"{type(model).__name__}: reduction locations={locations}; accepted: increasing blocks "
                     f"0..{model.depth - 1}")
  keep = dict(zip(locations, dynamicvit.keep_counts(model.grid[0] * model.grid[1], cfg.get("keep_rate", 0.7),
                                                     len(locations))))
  return dict(kind="dynamicvit", locations=locations,
              blocks=tuple(dict(prune_keep=keep.get(i, 0)) for i in range(model.depth)))


def _ats(model, cfg) -> dict:
  if model.global_pool != "token":
    raise ValueError(f"{type(model).__name__}: reduction kind='ats' needs global_pool='token' (got "
                     f"{model.global_pool!r}): the padded tokens would enter the pooling")
  locations = _locations(model, cfg.get("locations", ats.DEFAULT_LOCATIONS))
  plan = ats.plan(model.grid[0] * model.grid[1] + 1, model.depth, cfg.get("n_tokens", 1.0), locations)
  return dict(kind="ats", locations=locations, blocks=tuple(dict(ats_tokens=k, ats_samples=s) for k, s in plan))


def _evo_vit(model, cfg) -> dict:
  return dict(kind="evo_vit", blocks=tuple(dict(cls_attention=True) for _ in range(model.depth)),
              **evo_vit.plan(model, cfg))


def _locations(model, locations) -> tuple:
  locations = tuple(locations)
  if any(not isinstance(i, int) or not 0 <= i < model.depth for i in locations) or \
      list(locations) != sorted(set(locations)):
    raise ValueError(f"{type(model).__name__}: reduction locations={locations}; accepted: increasing blocks "
                     f"0..{model.depth - 1}")
  return locations


def _patch_merger(model, cfg) -> dict:
  """PatchMerger before block `location` (default depth // 2), `tokens` M (default 8) out."""
  name = type(model).__name__
  if model.num_prefix_tokens:
    raise ValueError(f"{name}: reduction kind='patch_merger' needs class_token=False and global_pool='avg' "
                     f"(the paper pools by average; merged tokens have no class token)")
  location, tokens = cfg.get("location", model.depth // 2), cfg.get("tokens", 8)
  if not isinstance(location, int) or not 0 <= location < model.depth:
    raise ValueError(f"{name}: reduction location={location!r}; accepted: a block 0..{model.depth - 1} (the "
                     f"merger runs before it)")
  n = model.grid[0] * model.grid[1]
  if not isinstance(tokens, int) or not 1 <= tokens <= n:
    raise ValueError(f"{name}: reduction tokens={tokens!r}; accepted: an int in 1..{n} (the patch count)")
  return dict(kind="patch_merger", location=location, tokens=tokens, blocks=({},) * model.depth)


_PLANNERS = {"tome": _tome, "evit": _evit, "dynamicvit": _dynamicvit, "ats": _ats, "patch_merger": _patch_merger,
             "evo_vit": _evo_vit, "idlevit": idlevit.plan, "tofu": tofu.plan, "tcformer": tcformer.plan}
