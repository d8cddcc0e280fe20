"""AdamW (Loshchilov & Hutter): Adam with weight decay applied to the weights, not the gradient."""

from __future__ import annotations

import numpy as np

from .adam import Adam, adam
from .optimizer import Scratch


class AdamW(Adam):
    r"""Adam with decoupled weight decay; PyTorch's AdamW, operation for operation.

    .. code-block:: text

        theta = theta * (1 - lr * weight_decay)     before the Adam update of ``Adam``
        (the gradient itself is not decayed, so the decay does not pass through m and v)

    Same state as ``Adam``. ``decoupled_weight_decay`` is always True, also after loading a
    state dict, as in PyTorch.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load as ``Adam`` does, keeping weight decay decoupled whatever the dict says."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def adamw(params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
          exp_avg_sqs: list[np.ndarray], max_exp_avg_sqs: list[np.ndarray], steps: list[float],
          *, amsgrad: bool, beta1: float, beta2: float, lr: float, weight_decay: float,
          eps: float, maximize: bool, scratch: Scratch | None = None) -> None:
    """AdamW on NumPy arrays, in place: ``adam`` with ``decoupled_weight_decay=True``."""
    adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, amsgrad=amsgrad,
         beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay, eps=eps, maximize=maximize,
         decoupled_weight_decay=True, scratch=scratch)
