"""mteb 2.x: :class:`DmetaEncoder`, an encoder ``mteb.evaluate`` runs, with ``ModelMeta`` from the manifest.

    import mteb
    from dmeta_embed.integrations.mteb import DmetaEncoder
    model = DmetaEncoder("out/dmeta", variant="int8")
    results = mteb.evaluate(model, mteb.get_benchmark("MTEB(cmn, v1)"))

mteb itself needs torch (the runtime does not); install with ``pip install 'dmeta-embed[mteb]'``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..runtime import Embedder
from ._common import embedder_from

AbsEncoder = require("mteb.models.abs_encoder").AbsEncoder
ModelMeta = require("mteb.models.model_meta").ModelMeta

#: mteb scores these itself; the others go through Embedder.similarity
_MTEB_SCORES = {"cosine", "dot"}


def model_meta(embedder: Embedder) -> Any:
    """mteb's ``ModelMeta`` for one loaded variant: the source model, the variant as an experiment
    parameter (so each variant's results are stored apart), sizes and limits from the manifest."""
    m = embedder.manifest
    source = str(m.source.get("model") or embedder.path)
    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None and not Path(source).exists()
    spec = m.variants[embedder.variant.value]
    return ModelMeta(
        loader=None,
        name=source if hub_id else f"dmeta-embed/{embedder.path.name}",
        revision=m.source.get("revision"),
        release_date=None,
        languages=None,
        n_parameters=None,
        memory_usage_mb=round(spec.size_bytes / 2**20, 1),
        max_tokens=embedder.max_seq_length,
        embed_dim=embedder.get_embedding_dimension(),
        license=None,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["ONNX"],
        reference=f"https://huggingface.co/{source}" if hub_id else None,
        similarity_fn_name=embedder.similarity_fn_name
        if embedder.similarity_fn_name in _MTEB_SCORES
        else None,
        use_instructions=any(embedder.prompts.values()),
        training_datasets=None,
        adapted_from=source if hub_id else None,
        experiment_kwargs={"variant": embedder.variant.value},
    )


class DmetaEncoder(AbsEncoder):  # type: ignore[misc,valid-type]
    """An exported folder as an mteb encoder: ``DmetaEncoder(model_path, **Embedder.load options)``.

    Prompts: mteb's choice by task and prompt type among the model's recorded prompts (task name,
    then task type, then "query"/"document"), else ``encode_query``/``encode_document``'s defaults.
    """

    def __init__(
        self, model_path: str | Path | None = None, *, embedder: Embedder | None = None, **load_options: Any
    ) -> None:
        self.model = embedder_from(model_path, embedder, load_options)
        self.model_prompts = dict(self.model.prompts) or None
        self.mteb_model_meta = model_meta(self.model)

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        name = self.get_prompt_name(task_metadata, prompt_type)
        prompt = self.model.prompts[name] if name else None
        kind = getattr(prompt_type, "value", prompt_type)
        encode = {"query": self.model.encode_query, "document": self.model.encode_document}.get(
            kind, self.model.encode
        )
        return encode(texts, prompt=prompt)
