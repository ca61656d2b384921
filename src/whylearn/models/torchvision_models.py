"""Any ``torchvision.models`` classifier by name, for users whose torch has a matching torchvision.

torchvision is imported only when this factory is called; nothing else in
whylearn needs it (on the CPU-only torch of the development machines it cannot
be installed: see the notes on the environment).
"""

from __future__ import annotations

from torch import nn


def torchvision_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build ``torchvision.models.get_model(name, num_classes=..., **kwargs)`` (untrained unless ``weights`` is given).

    Args:
        name: a torchvision model name, e.g. ``resnet18``, ``wide_resnet50_2``, ``vgg11_bn``.
        num_classes: outputs (logits).
        in_channels: must be 3 (torchvision's classifiers take RGB images).
        kwargs: passed on (e.g. ``weights``).

    Shapes: input (B, 3, H, W); output (B, num_classes).

    Raises:
        ImportError: torchvision is not installed (says how to install it).
        ValueError: an unknown model name (lists the allowed ones) or in_channels != 3.
    """
    try:
        import torchvision
    except Exception as e:  # ImportError, or the operator errors of a mismatched build
        raise ImportError(
            f"model {name!r} needs torchvision, which could not be imported ({type(e).__name__}: {e}). Install the "
            "torchvision build matching your torch (pip install torchvision), or use whylearn's own CNN/ResNet."
        ) from e
    allowed = torchvision.models.list_models(module=torchvision.models)
    if name not in allowed:
        raise ValueError(f"unknown torchvision model {name!r}; allowed: {allowed}")
    if int(in_channels) != 3:
        raise ValueError(f"torchvision classifiers take 3-channel images, the data has in_channels={in_channels}")
    return torchvision.models.get_model(name, num_classes=int(num_classes), **kwargs)
