"""A timm reference model with every weight and BatchNorm statistic moved off its init."""


def perturbed(name, **timm_kwargs):
  """`timm.create_model(name)` in eval mode, weights moved off their init (zero heads, 1e-6
  LayerScale, zero-init last BN) and BatchNorm's running statistics off (0, 1), where eval-mode BN
  would be nearly the identity: every path then counts in a comparison."""
  import timm
  import torch
  reference = timm.create_model(name, pretrained=False, **timm_kwargs).eval()
  torch.manual_seed(0)
  with torch.no_grad():
    for p in reference.parameters():
      p.add_(0.02 * torch.randn_like(p))
    for key, buffer in reference.named_buffers():
      if key.endswith("running_mean"):
        buffer.copy_(0.1 * torch.randn_like(buffer))
      elif key.endswith("running_var"):
        buffer.copy_(0.5 + torch.rand_like(buffer))
  return reference


def timm_logits(reference, images):
  """timm's logits for NHWC numpy `images`."""
  import torch
  with torch.no_grad():
    return reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
