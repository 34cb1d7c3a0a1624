"""segmentation-models-pytorch models built offline: random init or a local weights file.

Nothing here downloads: ``encoder_weights`` is always ``None``, and ``--weights PATH`` loads a
state dict from disk (the whole model, e.g. a ``fold<i>.pt`` of an earlier run, or only the
encoder, e.g. an ImageNet file fetched once by hand).
"""

from __future__ import annotations

import os
import textwrap
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import torch
from torch import nn

from .config import Arch, ConfigError

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINT_FORMAT",
    "build_model",
    "check_encoder",
    "checkpoint_payload",
    "encoder_names",
    "load_weights",
]

#: ``--arch`` values: segmentation-models-pytorch architecture names.
ARCHITECTURES: tuple[str, ...] = get_args(Arch)
#: The checkpoint format ``tilestream.load_model`` rebuilds.
CHECKPOINT_FORMAT = "tilestream-smp-v1"


def _smp() -> Any:
    try:
        with warnings.catch_warnings():
            # timm/smp import-time deprecation notices are not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            import segmentation_models_pytorch as smp
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "the examples need segmentation-models-pytorch: pip install -e '.[examples]'"
        ) from err
    return smp


def encoder_names() -> list[str]:
    """Encoders segmentation-models-pytorch builds (``tu-<timm name>`` also works)."""
    return list(_smp().encoders.get_encoder_names())


def _pretrained_names() -> set[str]:
    names: set[str] = set()
    for entry in _smp().encoders.encoders.values():
        names |= set(entry.get("pretrained_settings", {}))
    return names


def check_encoder(name: str) -> None:
    """Raise :class:`ConfigError` listing the valid encoders when ``name`` is not one."""
    if name in encoder_names():
        return
    if name.startswith("tu-"):
        try:
            import timm
        except ImportError:
            pass
        else:
            if timm.is_model(name[3:]):
                return
    listing = textwrap.fill(
        ", ".join(encoder_names()), width=96, initial_indent="  ", subsequent_indent="  "
    )
    raise ConfigError(
        f"--encoder: unknown encoder {name!r}; segmentation-models-pytorch knows:\n{listing}\n"
        "  (or tu-<name> for a timm model)"
    )


def check_weights(path: str | None, encoder: str) -> None:
    """Refuse a ``--weights`` that is not a local file (in particular a pretrained-weights name)."""
    if path is None:
        return
    if Path(path).is_file():
        return
    if path in _pretrained_names() or path.lower() in {"pretrained", "true", "default"}:
        raise ConfigError(
            f"--weights {path}: pretrained weights are never downloaded by this example (it runs "
            f"offline). Download the {path!r} weights of {encoder!r} once yourself (for example "
            "from the segmentation-models-pytorch Hugging Face hub, smp-hub/"
            f"{encoder}.{path}) and pass --weights /path/to/that/file; or leave --weights out "
            "to start from random weights."
        )
    raise ConfigError(f"--weights {path}: no such file")


def build_model(arch: str, encoder: str, *, weights: str | None = None) -> nn.Module:
    """An smp model with one output channel (logits), random init or ``weights`` loaded."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"--arch: unknown {arch!r}; choose from {sorted(ARCHITECTURES)}")
    check_encoder(encoder)
    check_weights(weights, encoder)
    smp = _smp()
    model: nn.Module = smp.create_model(
        arch, encoder_name=encoder, encoder_weights=None, classes=1
    )
    if weights is not None:
        load_weights(model, weights)
    for module in model.modules():
        # Some encoders (EfficientNet: 0.01) update BatchNorm running statistics so slowly that
        # after a few hundred steps from scratch eval mode still sees the initial ones.
        if isinstance(module, nn.BatchNorm2d) and module.momentum is not None:
            module.momentum = max(module.momentum, 0.1)
    return model


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(f"--weights {path}: not a torch state dict ({err})") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ConfigError(f"--weights {path}: expected a mapping of parameter names to tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Load a whole-model or encoder-only state dict into ``model``; return what was loaded.

    Raises
    ------
    ConfigError
        The file matches neither the model nor its encoder (names or shapes).
    """
    state = _read_state_dict(path)
    full = model.state_dict()
    if set(full) <= set(state):
        mismatched = [k for k in full if state[k].shape != full[k].shape]
        if mismatched:
            raise ConfigError(
                f"--weights {path}: shapes differ from the model for {mismatched[:5]} "
                "(another encoder or architecture?)"
            )
        model.load_state_dict({k: state[k] for k in full})
        return f"whole model from {path}"
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    enc = encoder.state_dict()
    stripped = {k.removeprefix("encoder."): v for k, v in state.items()}
    usable = {k: v for k, v in stripped.items() if k in enc and v.shape == enc[k].shape}
    if len(usable) < 0.9 * len(enc):
        raise ConfigError(
            f"--weights {path}: matches neither the model ({len(full)} tensors) nor its encoder "
            f"({len(usable)} of {len(enc)} encoder tensors match by name and shape)"
        )
    encoder.load_state_dict(usable, strict=False)
    return f"{len(usable)}/{len(enc)} encoder tensors from {path}"


def checkpoint_payload(
    model: nn.Module, arch: str, encoder: str, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``tilestream-smp-v1`` dict :func:`tilestream.load_model` reads, plus ``extra``."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "encoder": encoder,
        "classes": 1,
        "state_dict": state,
    }
    payload.update(extra or {})
    return payload
