"""Knowledge distillation: response losses over logits, teachers, and the trainer's distillation objective."""

from jaxvit.distill.response import (deit_hard, deit_soft, dkd, dkd_parts, function_matching, kd, logit_standardization,
                                     nkd, normkd, ofa, standardize, tf_kd, wttm)
