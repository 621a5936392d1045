"""Knowledge distillation: response losses over logits, teachers, and the trainer's distillation objective."""

from jaxvit.distill.feature import attention_map, fitnet, manifold, tinymim, vitkd
from jaxvit.distill.response import (ctkd, ctkd_lambda, ctkd_temperature, deit_hard, deit_soft, dkd, dkd_parts,
                                     function_matching, gradient_reversal, kd, logit_standardization, nkd, normkd, ofa,
                                     standardize, tf_kd, uskd, wttm)
