"""What both rerank adapters do the same way: a query's documents ranked, best first, by a local
``Reranker`` or by a server's ``POST /v1/rerank`` (``dmeta-embed serve --rerank-model``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RemoteError

if TYPE_CHECKING:
    from ..runtime.reranker import Reranker

#: (query, documents, top_n) → (document index, score) pairs, best first; top_n None: all
Rank = Callable[[str, list[str], int | None], list[tuple[int, float]]]


def local_rank(reranker: Reranker) -> Rank:
    """Ranking by ``Reranker.rank`` (its activation: the scores CrossEncoder.rank gives)."""

    def rank(query: str, documents: list[str], top_n: int | None) -> list[tuple[int, float]]:
        return [
            (int(r["corpus_id"]), float(r["score"])) for r in reranker.rank(query, documents, top_k=top_n)
        ]

    return rank


def remote_rank(base_url: str, api_key: str | None, model: str | None, timeout: float) -> Rank:
    """Ranking by a server's ``/v1/rerank`` (Cohere's shape); its refusals raise RemoteError
    with the server's status and message."""
    url = base_url.rstrip("/") + "/v1/rerank"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def rank(query: str, documents: list[str], top_n: int | None) -> list[tuple[int, float]]:
        body: dict[str, Any] = {"query": query, "documents": documents}
        if top_n is not None:
            body["top_n"] = top_n
        if model:
            body["model"] = model
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as e:
            raise RemoteError(f"{url}: {e.code} {_message(e.read())}", e.code) from e
        except (urllib.error.URLError, OSError) as e:
            raise RemoteError(f"{url}: {e}") from e
        return [(int(r["index"]), float(r["relevance_score"])) for r in answer["results"]]

    return rank


def _message(raw: bytes) -> str:
    """The error message of an OpenAI-shaped error body, else the body as text."""
    try:
        err = json.loads(raw)["error"]
        return str(err["message"] if isinstance(err, dict) else err)
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace")[:500]


def ranker_from(
    model_path: str | Path | None,
    reranker: Reranker | None,
    base_url: str | None,
    *,
    api_key: str | None,
    model: str | None,
    timeout: float,
    load_options: dict[str, Any],
) -> Rank:
    """Exactly one of: an exported reranker folder (``Reranker.load(model_path, **load_options)``),
    a loaded ``reranker``, or a server's ``base_url``."""
    given = [x for x in (model_path, reranker, base_url) if x is not None]
    if len(given) != 1:
        raise TypeError("pass exactly one of model_path= (an exported folder), reranker= or base_url=")
    if base_url is not None:
        return remote_rank(base_url, api_key, model, timeout)
    if reranker is None:
        from ..runtime.reranker import Reranker

        assert model_path is not None
        reranker = Reranker.load(model_path, **load_options)
    return local_rank(reranker)


class _Default(Enum):
    """Marks ``top_n`` left to the adapter's own default (where None means "keep all")."""

    TOP_N = "the adapter's top_n field default"


class RerankAdapter:
    """The constructor both ``DmetaRerank`` adapters share, as a mixin before their framework's
    pydantic base (which declares ``top_n`` with its default and the private ``_rank``)."""

    _rank: Rank

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        reranker: Reranker | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        top_n: int | None | _Default = _Default.TOP_N,
        timeout: float = 60.0,
        **load_options: Any,
    ) -> None:
        """The reranker is exactly one of: ``model_path`` (an exported reranker folder, loaded with
        ``**load_options``), ``reranker`` (a loaded ``Reranker``), or ``base_url`` (a
        ``dmeta-embed serve`` hosting one; ``api_key`` its key, ``model`` the name sent, ``timeout``
        seconds). ``top_n``: the documents kept (None: all, reordered; not given: the adapter's
        default). Scores are the reranker's activated scores (CrossEncoder.rank's)."""
        super().__init__(**({} if isinstance(top_n, _Default) else {"top_n": top_n}))
        self._rank = ranker_from(
            model_path,
            reranker,
            base_url,
            api_key=api_key,
            model=model,
            timeout=timeout,
            load_options=load_options,
        )
