"""What code written against sentence-transformers v5's ``SentenceTransformer`` calls, on ``Embedder``.

Prompts, ``default_prompt_name`` and the similarity function come from the model's
``config_sentence_transformers.json`` (recorded in the manifest at export); Matryoshka truncation
only to the dims the export was told the model supports (``export --truncate-dims``). Behaviour
follows sentence-transformers 5.7: ``prompt`` wins over ``prompt_name``, else the default prompt;
truncation cuts the (already normalised) vector and does not renormalise unless
``normalize_embeddings=True``. Standard library and numpy only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .options import check_output
from .vectors import normalize

if TYPE_CHECKING:
    from ..manifest import Manifest
    from .tokenize import TextTokenizer

log = logging.getLogger(__name__)

#: sentence-transformers' names; each a function (a, b) → (len(a), len(b)) score matrix
SIMILARITY_FNS = ("cosine", "dot", "euclidean", "manhattan")
#: the prompt names ``encode_document`` tries, in sentence-transformers' order
DOCUMENT_PROMPTS = ("document", "passage", "corpus")


class SentenceTransformerAPI:
    """Mixed into ``Embedder``: the sentence-transformers surface over ``encode``."""

    manifest: Manifest
    path: Path
    tokenizer: TextTokenizer

    if TYPE_CHECKING:

        def encode(self, texts: Any, *args: Any, **kwargs: Any) -> np.ndarray: ...

    # -- state sentence-transformers keeps on the model, here per instance and set lazily so that
    # -- Embedder.__init__ needs nothing from this class

    @property
    def prompts(self) -> dict[str, str]:
        """Prompt name → text put before each input (mutable, like sentence-transformers')."""
        if "_prompts" not in self.__dict__:
            self.__dict__["_prompts"] = dict(self.manifest.prompts)
        return self.__dict__["_prompts"]  # type: ignore[no-any-return]

    @prompts.setter
    def prompts(self, value: dict[str, str]) -> None:
        self.__dict__["_prompts"] = dict(value)

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt used when a call names none (None: no prompt)."""
        return self.__dict__.get("_default_prompt_name", self.manifest.default_prompt_name)

    @default_prompt_name.setter
    def default_prompt_name(self, value: str | None) -> None:
        if value is not None and value not in self.prompts:
            raise _not_a_prompt("default_prompt_name", value, self.prompts)
        self.__dict__["_default_prompt_name"] = value

    @property
    def similarity_fn_name(self) -> str:
        """cosine|dot|euclidean|manhattan: what :meth:`similarity` computes."""
        return self.__dict__.get("_similarity_fn_name", self.manifest.similarity_fn_name)

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str) -> None:
        value = str(getattr(value, "value", value))  # sentence-transformers' SimilarityFunction enum
        if value not in SIMILARITY_FNS:
            reason = f"must be one of {', '.join(SIMILARITY_FNS)}, got {value!r}"
            raise InputError(f"similarity_fn_name {reason}", field="similarity_fn_name", reason=reason)
        self.__dict__["_similarity_fn_name"] = value

    @property
    def truncate_dim(self) -> int | None:
        """Dims every ``encode`` keeps (None: all); only the Matryoshka dims the manifest lists."""
        return self.__dict__.get("_truncate_dim")  # type: ignore[no-any-return]

    @truncate_dim.setter
    def truncate_dim(self, value: int | None) -> None:
        check_output(self.manifest, value)
        self.__dict__["_truncate_dim"] = value

    @property
    def max_seq_length(self) -> int:
        """Tokens each input is cut to; may be lowered (not raised past the export's max_length)."""
        return self.tokenizer.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        from .tokenize import TextTokenizer

        if not 2 <= int(value) <= self.manifest.max_length:
            reason = f"must be 2..{self.manifest.max_length} (the export's max_length), got {value}"
            raise InputError(f"max_seq_length {reason}", field="max_seq_length", reason=reason)
        self.tokenizer = TextTokenizer(self.path / self.manifest.tokenizer.file, int(value))

    def get_embedding_dimension(self) -> int:
        """Length of each vector ``encode`` returns (``truncate_dim`` when set)."""
        return min(self.manifest.dim, self.truncate_dim or self.manifest.dim)

    def get_sentence_embedding_dimension(self) -> int:
        """sentence-transformers' older name for :meth:`get_embedding_dimension`."""
        return self.get_embedding_dimension()

    # -- encoding

    def encode_query(
        self,
        texts: str | list[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        """``encode`` with the "query" prompt when neither ``prompt`` nor ``prompt_name`` is given
        and the model has one (else the default prompt, as ``encode``)."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            prompt_name=prompt_name,
            prompt=prompt,
            **kwargs,
        )

    def encode_document(
        self,
        texts: str | list[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        """``encode`` with the first of the "document", "passage", "corpus" prompts the model has
        when neither ``prompt`` nor ``prompt_name`` is given (else the default prompt)."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in DOCUMENT_PROMPTS if n in self.prompts), None)
        return self.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            prompt_name=prompt_name,
            prompt=prompt,
            **kwargs,
        )

    def similarity(self, a: Any, b: Any) -> np.ndarray:
        """Score matrix ``(len(a), len(b))`` float32 with :attr:`similarity_fn_name` (a 1-d input is
        one vector)."""
        x, y = _as_batch(a), _as_batch(b)
        fn = self.similarity_fn_name
        if fn == "cosine":
            return normalize(x) @ normalize(y).T  # type: ignore[no-any-return]
        if fn == "dot":
            return x @ y.T  # type: ignore[no-any-return]
        order = 2 if fn == "euclidean" else 1
        return -np.linalg.norm(x[:, None, :] - y[None, :, :], ord=order, axis=-1).astype(np.float32)

    def similarity_pairwise(self, a: Any, b: Any) -> np.ndarray:
        """Score of each row of ``a`` with the same row of ``b``: float32 ``(n,)``."""
        x, y = _as_batch(a), _as_batch(b)
        fn = self.similarity_fn_name
        if fn == "cosine":
            return (normalize(x) * normalize(y)).sum(axis=-1)  # type: ignore[no-any-return]
        if fn == "dot":
            return (x * y).sum(axis=-1)  # type: ignore[no-any-return]
        order = 2 if fn == "euclidean" else 1
        return -np.linalg.norm(x - y, ord=order, axis=-1).astype(np.float32)

    # -- helpers ``Embedder.encode`` calls

    def resolve_prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The text put before each input ("" for none), resolved as sentence-transformers does."""
        if prompt is None:
            if prompt_name is not None:
                if prompt_name not in self.prompts:
                    raise _not_a_prompt("prompt_name", prompt_name, self.prompts)
                prompt = self.prompts[prompt_name]
            elif self.default_prompt_name is not None:
                prompt = self.prompts.get(self.default_prompt_name)
        elif prompt_name is not None:
            log.warning(
                "both prompt and prompt_name given: using prompt, ignoring prompt_name %r", prompt_name
            )
        if not isinstance(prompt, str | None):
            reason = f"must be a str, got {type(prompt).__name__}"
            raise InputError(f"prompt {reason}", field="prompt", reason=reason)
        return prompt or ""


def _not_a_prompt(field: str, name: str, prompts: dict[str, str]) -> InputError:
    which = f"not one of this model's prompts ({', '.join(prompts) or 'none'})"
    return InputError(
        f"{field} {name!r} is {which}", field=field, reason=f"cannot be {name!r}: it is {which}"
    )


def _as_batch(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor from code that mixes both
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    return arr[None, :] if arr.ndim == 1 else arr
