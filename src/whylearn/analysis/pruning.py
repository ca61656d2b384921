"""Iterative magnitude pruning with rewinding: the lottery-ticket procedure of Frankle & Carbin 2019.

Frankle & Carbin ("The lottery ticket hypothesis: finding sparse, trainable neural networks", ICLR
2019, Sec. 1, "Identifying winning tickets") find a *winning ticket* by repeating:

1. train the network from its initialization theta_0;
2. prune, layer by layer, the fraction p_l of the *remaining* weights with the smallest magnitude
   (LeNet-300-100: p = 20% in the hidden layers, 10% in the output layer; Sec. 2 and Fig. 2);
3. reset the surviving weights to their values in theta_0 ("rewinding") and train again.

After n rounds a layer keeps (1 - p_l)^n of its weights. The control (Sec. 2, Fig. 4) keeps the same
masks but draws a *new* random initialization ("random reinit"): winning tickets learn faster and
reach higher test accuracy than it, and than the dense network, down to about 10-20% of the weights.

The masks are :mod:`torch.nn.utils.prune`'s (``l1_unstructured``, which prunes a fraction of the
still-unpruned entries when applied again, exactly step 2), so a pruned layer holds ``weight_orig``
(the trainable values) and the buffer ``weight_mask``, and its forward uses their product. Biases
are not pruned (as in the paper). Everything here is pure: functions of a model and tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose ``weight`` is pruned, in forward-definition order: every Linear and Conv (1-D, 2-D).

    Raises:
        ValueError: the model has none.
    """
    layers = [m for m in model.modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layer to prune")
    return layers


def layer_rates(model: nn.Module, hidden_rate: float, output_rate: float) -> list[float]:
    """Per-layer pruning fractions per round: ``hidden_rate`` for every prunable layer but the last,
    ``output_rate`` for the last one (Frankle & Carbin's LeNet-300-100 rates: 0.2 and 0.1).

    Raises:
        ValueError: a rate outside [0, 1).
    """
    for name, r in (("hidden_rate", hidden_rate), ("output_rate", output_rate)):
        if not 0.0 <= r < 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1), got {r}")
    n = len(prunable_layers(model))
    return [float(hidden_rate)] * (n - 1) + [float(output_rate)]


def weight(layer: nn.Module) -> Tensor:
    """The trainable weight tensor of a layer, pruned (``weight_orig``) or not (``weight``)."""
    return layer.weight_orig if prune.is_pruned(layer) and hasattr(layer, "weight_orig") else layer.weight


def masks(model: nn.Module) -> list[Tensor]:
    """The current 0/1 mask of every prunable layer (all ones for a layer not pruned yet), cloned."""
    return [(layer.weight_mask if hasattr(layer, "weight_mask") else torch.ones_like(layer.weight)).detach().clone()
            for layer in prunable_layers(model)]


def prune_by_magnitude(model: nn.Module, rates: Sequence[float]) -> list[Tensor]:
    """One pruning round: in layer l remove the fraction ``rates[l]`` of the remaining weights with the
    smallest |w| (``torch.nn.utils.prune.l1_unstructured``; Frankle & Carbin 2019, Sec. 1 step 3).

    Args:
        model: a trained network; its prunable layers (:func:`prunable_layers`) are pruned in place.
        rates: one fraction in [0, 1) per prunable layer.

    Returns:
        The new masks (one per layer, 0/1, the weight's shape).

    Raises:
        ValueError: the number of rates differs from the number of prunable layers.
    """
    layers = prunable_layers(model)
    if len(rates) != len(layers):
        raise ValueError(f"{len(rates)} pruning rates for {len(layers)} prunable layers; give one per layer")
    for layer, rate in zip(layers, rates, strict=True):
        remaining = int(layer.weight_mask.sum()) if hasattr(layer, "weight_mask") else layer.weight.numel()
        # torch's l1_unstructured rounds a float amount against the remaining entries already; pass a count so a
        # 10% round of a small output layer removes round(0.1 * remaining) weights, never a fraction of one
        prune.l1_unstructured(layer, "weight", amount=int(round(rate * remaining)))
    return masks(model)


def apply_masks(model: nn.Module, new_masks: Sequence[Tensor]) -> None:
    """Prune ``model``'s layers with the given 0/1 masks (``prune.custom_from_mask``), replacing any earlier
    pruning; used to put a winning ticket's masks on a re-initialized network.

    Raises:
        ValueError: wrong number of masks or a mask of the wrong shape.
    """
    layers = prunable_layers(model)
    if len(new_masks) != len(layers):
        raise ValueError(f"{len(new_masks)} masks for {len(layers)} prunable layers")
    for layer, m in zip(layers, new_masks, strict=True):
        if tuple(m.shape) != tuple(weight(layer).shape):
            raise ValueError(f"mask of shape {tuple(m.shape)} for a weight of shape {tuple(weight(layer).shape)}")
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")
        prune.custom_from_mask(layer, "weight", m.to(layer.weight.device))


def rewind(model: nn.Module, initial_state: dict[str, Tensor]) -> None:
    """Reset every trainable value of ``model`` to ``initial_state`` (a ``state_dict`` of the same network
    taken before training and before pruning), keeping the masks: Frankle & Carbin's step 4.

    A pruned layer's ``weight_orig`` gets the initial ``weight``; everything else (biases, unpruned
    layers) its initial value. The masked entries stay masked.

    Raises:
        KeyError: ``initial_state`` lacks a parameter of the model.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            key = name[: -len("_orig")] if name.endswith("weight_orig") else name
            if key not in initial_state:
                raise KeyError(f"the initial state has no entry {key!r} for the parameter {name!r}")
            p.copy_(initial_state[key].to(p.device, p.dtype))
    for layer in prunable_layers(model):  # refresh the masked weight now, as prune's forward pre-hook would
        if hasattr(layer, "weight_mask"):
            layer.weight = layer.weight_orig * layer.weight_mask


def fraction_remaining(model: nn.Module) -> float:
    """Unpruned weights over all weights of the prunable layers (biases excluded), in (0, 1]."""
    ms = masks(model)
    return float(sum(int(m.sum()) for m in ms) / sum(m.numel() for m in ms))


def expected_fraction(model: nn.Module, rates: Sequence[float], rounds: int) -> float:
    """The fraction of the prunable weights left after ``rounds`` rounds at ``rates``:
    sum_l n_l (1 - p_l)^rounds / sum_l n_l (before rounding to whole weights)."""
    sizes = [weight(layer).numel() for layer in prunable_layers(model)]
    return float(sum(n * (1 - p) ** rounds for n, p in zip(sizes, rates, strict=True)) / sum(sizes))
