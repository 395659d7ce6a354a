"""AdamW as torch.optim.AdamW computes it, layer-wise LR decay, frozen layers and clipping, in MXNet.

The rules (layer of a parameter, multipliers, freezing, schedule) are the framework-free
ones of ``bench.run.training_rules``, applied through Gluon's own per-parameter attributes:

* ``lr_mult``   the layer-wise decay multiplier (layer found from the parameter's torch/HF name,
                so both backends put every parameter in the same layer);
* ``wd_mult``   0 for biases and for the weights of normalisation blocks (LayerNorm's gamma/beta,
                MobileBERT's NoNorm), 1 elsewhere — the torch backend's no-decay set;
* ``grad_req``  'null' for the parameters ``--untunable_depth`` freezes (no gradient, no update,
                as torch's requires_grad=False), 'add' for the rest so that micro-batches accumulate.

``TorchAdamW`` is an ``mx.optimizer.Optimizer`` run by a ``gluon.Trainer`` (which reads those
attributes). Its update is torch.optim.AdamW's::

    w <- w * (1 - lr * wd)                        decoupled weight decay, scaled by the LR
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)      eps after the sqrt

with ``t`` counted per parameter, computed by MXNet's fused ``adamw_update`` kernel (one pass
over each tensor instead of a dozen): that kernel has no bias correction, so it gets the
algebraically identical ``lr' = lr sqrt(1 - b2^t) / (1 - b1^t)``, ``eps' = eps sqrt(1 - b2^t)``,
``wd' = lr wd``. One more factor: the kernel computes 1 - b2 in float32 from a float32 b2
(0.999 -> 0.00099998713), torch rounds 1 - b2 itself (0.00100000005), so the kernel's v is
torch's times a constant r = 0.99998708; lr' and eps' are scaled by sqrt(r) to cancel it.
Measured against torch.optim.AdamW: equal to float32 rounding.

Clipping is torch's ``clip_grad_norm_``: coefficient max_norm / (norm + 1e-6) when below 1.
The loop hands it to the Trainer as the gradient normalisation (``update(1 / coefficient)``),
so the kernel scales the gradients on the fly instead of a separate pass rewriting them.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from bench.core.flags import parse_adam_betas
from bench.backends.mxnet.compat import import_mxnet
from bench.backends.mxnet.convert import structural_params
from bench.backends.mxnet.heads import torch_names
from bench.core.families import get_family
from bench.run.training_rules import (frozen_depth, is_frozen, layer_multiplier,
                                  warn_albert_decay)

mx, _ = import_mxnet()
from mxnet.gluon import nn  # noqa: E402

__all__ = ["ParameterRule", "parameter_rules", "apply_rules", "TorchAdamW", "build_trainer", "trainable_params",
           "global_grad_norm", "clip_coefficient", "zero_grads", "optimizer_state", "load_optimizer_state"]

logger = logging.getLogger(__name__)

# Normalisation blocks whose parameters never decay; by class name too, as torch's optim does
# (MobileBERT's NoNorm is no nn.LayerNorm).
_NORM_CLASS_SUFFIXES = ("LayerNorm", "RMSNorm", "NoNorm")


@dataclass(frozen=True)
class ParameterRule:
    """How one Gluon parameter (structural name) is trained."""
    torch_name: str
    layer: int | None       # training_rules layer index; None = the head
    lr_mult: float
    decays: bool
    frozen: bool


def _norm_param_names(block, prefix: str = "") -> set[str]:
    """Structural names of the parameters of every normalisation block below ``block``."""
    names = set()
    if isinstance(block, nn.LayerNorm) or type(block).__name__.endswith(_NORM_CLASS_SUFFIXES):
        names.update(f"{prefix}{name}" for name in block._reg_params)  # pylint: disable=protected-access
    for child_name, child in block._children.items():  # pylint: disable=protected-access
        names |= _norm_param_names(child, f"{prefix}{child_name}.")
    return names


def _layer_of(model, torch_name: str) -> int | None:
    if not torch_name.startswith("backbone."):
        return None
    return get_family(model.family).layer_index(torch_name[len("backbone."):])


def parameter_rules(model, *, layerwise_decay: float, untunable_depth: float) -> dict[str, ParameterRule]:
    """The rule of every parameter of ``model`` (a GluonQAModel), by structural name.

    A backbone parameter no layer rule covers raises ValueError even with decay off: it
    would silently escape decay and freezing otherwise.
    """
    num_layers = model.config.num_cells      # ALBERT: its layer groups, as the torch backend counts
    warn_albert_decay(model.family, num_layers, layerwise_decay)
    depth = frozen_depth(untunable_depth, num_layers)
    norms = _norm_param_names(model)
    rules = {}
    for name, torch_name in torch_names(model).items():
        layer = _layer_of(model, torch_name)
        rules[name] = ParameterRule(torch_name=torch_name, layer=layer,
                                    lr_mult=layer_multiplier(layer, num_layers, layerwise_decay),
                                    decays=not (name.endswith("bias") or name in norms),
                                    frozen=is_frozen(layer, depth))
    return rules


def apply_rules(model, rules: dict[str, ParameterRule]) -> None:
    """Set lr_mult, wd_mult and grad_req ('add': gradients accumulate until zero_grads) on every parameter."""
    frozen = 0
    for name, param in structural_params(model).items():
        rule = rules[name]
        param.lr_mult = rule.lr_mult
        param.wd_mult = 1.0 if rule.decays else 0.0
        param.grad_req = "null" if rule.frozen else "add"
        frozen += rule.frozen
    if frozen:
        logger.info("froze %d parameter tensors (embeddings + lowest layers)", frozen)


def trainable_params(model) -> dict:
    """Structural name -> Parameter for every parameter that gets gradients, in a fixed order."""
    return {name: param for name, param in structural_params(model).items() if param.grad_req != "null"}


@mx.optimizer.register
class TorchAdamW(mx.optimizer.Optimizer):
    """torch.optim.AdamW's update (see the module docstring); lr_mult / wd_mult per parameter.

    State per parameter: (exp_avg, exp_avg_sq); the step count is the optimizer's per-index
    update count, as torch keeps one ``step`` per parameter.
    """

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        # sqrt(r): the kernel's v is torch's times r = (1 - b2 in float32 arithmetic) / float32(1 - b2).
        kernel_increment = np.float32(1.0) - np.float32(beta2)
        self._sqrt_v_ratio = math.sqrt(float(kernel_increment) / float(np.float32(1.0 - beta2)))

    def create_state(self, index, weight):
        return (mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype),
                mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype))

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        step = self._index_update_count[index]
        bias1 = 1.0 - self.beta1 ** step
        bias2_sqrt = math.sqrt(1.0 - self.beta2 ** step)
        exp_avg, exp_avg_sq = state
        # w - lr wd w - lr/bias1 m / (sqrt(v)/bias2_sqrt + eps), in the kernel's form (see module docstring).
        # rescale_grad is the Trainer's normalisation: the clipping coefficient (x AMP's 1/scale).
        scale = bias2_sqrt * self._sqrt_v_ratio
        mx.nd.contrib.adamw_update(weight, grad, exp_avg, exp_avg_sq, self.rescale_grad,
                                   lr=lr * scale / bias1, eta=1.0, beta1=self.beta1, beta2=self.beta2,
                                   epsilon=self.epsilon * scale, wd=lr * wd, out=weight)


def build_trainer(model, config):
    """A gluon.Trainer with TorchAdamW over the trainable parameters (single process: no kvstore).

    The trainer's learning rate is the peak ``--lr``; the loop sets lr x schedule factor before
    every update, and each parameter's lr_mult applies on top.
    """
    beta1, beta2 = parse_adam_betas(config.adam_betas)
    optimizer = TorchAdamW(beta1=beta1, beta2=beta2, epsilon=config.adam_epsilon, learning_rate=config.lr,
                           wd=config.wd)
    return mx.gluon.Trainer(list(trainable_params(model).values()), optimizer, kvstore=None)


def global_grad_norm(params: list) -> float:
    """L2 norm of all gradients together, as clip_grad_norm_ measures it.

    Per tensor through BLAS dot (accurate to 1e-8 relative); MXNet's norm / multi_sum_sq sum in
    plain float32 and are 2e-4 off on an embedding-sized gradient.
    """
    squares = [mx.nd.dot(flat, flat, transpose_b=True).reshape((1,))
               for flat in (param.grad().reshape((1, -1)) for param in params)]
    return math.sqrt(float(np.sum(mx.nd.concat(*squares, dim=0).asnumpy(), dtype=np.float64)))


def clip_coefficient(norm: float, max_norm: float) -> float:
    """torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6) when below 1, else 1 (0: no clipping)."""
    if max_norm <= 0 or not math.isfinite(norm):
        # A non-finite norm: AMP's scaler skips this update (it checks the gradients themselves);
        # in float32 the parameters turn nan/inf as they do in torch.
        return 1.0
    return min(1.0, max_norm / (norm + 1e-6))


def zero_grads(params: list) -> None:
    for param in params:
        param.zero_grad()


# ---------------------------------------------------------------------------------------- state
def _updater(trainer):
    # The Trainer builds one Updater per context when it is created; one context here.
    return trainer._updaters[0]      # pylint: disable=protected-access


def optimizer_state(trainer, names: list[str]) -> dict[str, np.ndarray]:
    """AdamW moments and step counts as numpy arrays, keyed by parameter name (``names`` in the
    trainer's parameter order): ``exp_avg/<name>``, ``exp_avg_sq/<name>``, ``step/<name>``."""
    updater = _updater(trainer)
    counts = trainer._optimizer._index_update_count  # pylint: disable=protected-access
    state = {}
    for index, name in enumerate(names):
        if index not in updater.states:
            continue          # never updated yet (no state, as torch before its first step)
        exp_avg, exp_avg_sq = updater.states[index]
        state[f"exp_avg/{name}"] = exp_avg.asnumpy()
        state[f"exp_avg_sq/{name}"] = exp_avg_sq.asnumpy()
        state[f"step/{name}"] = np.array(counts[index], dtype=np.int64)
    return state


def load_optimizer_state(trainer, names: list[str], state: dict[str, np.ndarray]) -> None:
    """Put ``optimizer_state`` arrays back; parameters without saved moments start fresh."""
    updater = _updater(trainer)
    optimizer = trainer._optimizer  # pylint: disable=protected-access
    updater.states.clear()
    updater.states_synced.clear()
    optimizer._index_update_count.clear()  # pylint: disable=protected-access
    for index, (name, param) in enumerate(zip(names, trainer._params)):  # pylint: disable=protected-access
        if f"exp_avg/{name}" not in state:
            continue
        ctx = param.list_ctx()[0]
        updater.states[index] = (mx.nd.array(state[f"exp_avg/{name}"], ctx=ctx, dtype=param.dtype),
                                 mx.nd.array(state[f"exp_avg_sq/{name}"], ctx=ctx, dtype=param.dtype))
        updater.states_synced[index] = True
        optimizer._index_update_count[index] = int(state[f"step/{name}"])  # pylint: disable=protected-access
    optimizer.num_update = max(optimizer._index_update_count.values(), default=0)  # pylint: disable=protected-access
