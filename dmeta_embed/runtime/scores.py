"""A cross-encoder's logits → scores (sentence-transformers' ``activation_fn``). numpy only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import InputError
from ..rerank_records import Activation


def sigmoid(x: np.ndarray) -> np.ndarray:
    # the two branches keep exp from overflowing at large |x|
    out = np.empty_like(x, dtype=np.float32)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    """Over the labels (the last axis), as ``torch.nn.Softmax`` does on (n, labels)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


ACTIVATIONS: dict[Activation, Callable[[np.ndarray], np.ndarray]] = {
    Activation.SIGMOID: sigmoid,
    Activation.SOFTMAX: softmax,
    Activation.IDENTITY: lambda x: x,
}

#: an activation by name or enum, or a function of the (n, num_labels) logits
ActivationFn = Activation | str | Callable[[np.ndarray], np.ndarray]


def activation_function(fn: ActivationFn) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` as a function of logits: ``sigmoid``/``softmax``/``identity`` or a callable."""
    if callable(fn) and not isinstance(fn, str):
        return fn
    try:
        return ACTIVATIONS[Activation(fn)]
    except ValueError as e:
        choices = ", ".join(a.value for a in Activation)
        raise InputError(
            f"activation_fn {fn!r} is not one of {choices} or a callable",
            field="activation_fn",
            reason=f"is not one of {choices}",
        ) from e


def activate(logits: np.ndarray, fn: ActivationFn) -> np.ndarray:
    """``logits`` (n, num_labels) through ``fn``, float32, shape kept."""
    return np.asarray(activation_function(fn)(np.asarray(logits, dtype=np.float32)), dtype=np.float32)
