"""Whether a model folder is a cross-encoder, and what its files say about its scores.

A folder is a cross-encoder when its ``config.json`` names a ``...ForSequenceClassification``
architecture (transformers' layout, and sentence-transformers' CrossEncoder layout, which saves
the same ``config.json``). Its activation is read as sentence-transformers 5 reads it: the
``activation_fn`` of ``config_sentence_transformers.json`` (5.x), else ``config.json``'s
``sentence_transformers.activation_fn`` (4.x), else its ``sbert_ce_default_activation_function``
(before 4); else CrossEncoder's default: sigmoid for one label, identity (the raw logits) for
several. Standard library only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import ExportError, ModelLoadError
from ..rerank_records import LONGEST_FIRST, Activation, RerankSpec

log = logging.getLogger(__name__)

#: sentence-transformers' activation classes (``fullname`` of the module) → ours
ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": Activation.SIGMOID,
    "torch.nn.modules.activation.Softmax": Activation.SOFTMAX,
    "torch.nn.modules.linear.Identity": Activation.IDENTITY,
    # the short paths older configs and hand-written ones use
    "torch.nn.Sigmoid": Activation.SIGMOID,
    "torch.nn.Softmax": Activation.SOFTMAX,
    "torch.nn.Identity": Activation.IDENTITY,
}


def is_cross_encoder(config: dict[str, Any]) -> bool:
    """Whether ``config`` (a ``config.json``) is a sequence-classification model."""
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: unreadable JSON ({e})") from e
    return data if isinstance(data, dict) else {}


def _activation_path(folder: Path, config: dict[str, Any]) -> tuple[str | None, str]:
    """(the activation's dotted path, where it was found), or (None, "") when no file names one."""
    st = _read(folder / "config_sentence_transformers.json")
    if st.get("activation_fn"):
        return str(st["activation_fn"]), "config_sentence_transformers.json activation_fn"
    nested = config.get("sentence_transformers")
    if isinstance(nested, dict) and nested.get("activation_fn"):
        return str(nested["activation_fn"]), "config.json sentence_transformers.activation_fn"
    if config.get("sbert_ce_default_activation_function"):
        return str(
            config["sbert_ce_default_activation_function"]
        ), "config.json sbert_ce_default_activation_function"
    return None, ""


def rerank_spec(folder: Path, config: dict[str, Any], activation: str | None = None) -> RerankSpec:
    """The cross-encoder in ``folder``: its labels and activation (``activation``: the caller's
    override, a :class:`Activation` value). An activation this runtime does not compute is an
    ExportError naming it, never a silent other one."""
    id2label = config.get("id2label") or {}
    num_labels = int(config.get("num_labels") or len(id2label) or 1)
    labels = {int(k): str(v) for k, v in id2label.items()} if id2label else {}
    if labels and len(labels) != num_labels:
        raise ModelLoadError(
            f"{folder}: config.json has num_labels={num_labels} but {len(labels)} id2label entries"
        )
    if activation is not None:
        return RerankSpec(Activation(activation), num_labels, labels, LONGEST_FIRST, "flag")
    path, origin = _activation_path(folder, config)
    if path is None:
        # CrossEncoder's default (sentence-transformers 5): sigmoid for one label, identity for several
        chosen = Activation.SIGMOID if num_labels == 1 else Activation.IDENTITY
        return RerankSpec(chosen, num_labels, labels, LONGEST_FIRST, f"default ({chosen.value})")
    if path not in ACTIVATIONS:
        raise ExportError(
            f"{folder}: the cross-encoder's activation {path!r} ({origin}) is not one this runtime "
            f"computes ({', '.join(a.value for a in Activation)}); pass --activation to choose one"
        )
    return RerankSpec(ACTIVATIONS[path], num_labels, labels, LONGEST_FIRST, origin)
