"""The rerank adapters: LangChain's DmetaRerank (a document compressor) and LlamaIndex's (a node
postprocessor), each on a local Reranker and on a server's /v1/rerank, on a tiny random-weight
cross-encoder: CrossEncoder's order and scores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dmeta_embed.errors import RemoteError
from dmeta_embed.runtime import Reranker
from tests.helpers import running

QUERY = "维生素C可以预防感冒吗"
DOCS = [
    "维生素C可以预防感冒吗",
    "今天天气很好",
    "如何更换花呗绑定银行卡",
    "vitamins",
    "维生素C",
    "长文本" * 30,
]
ATOL = 1e-4


@pytest.fixture(scope="module")
def reranker(ce_export: Path) -> Reranker:
    return Reranker.load(ce_export, variant="fp32")


@pytest.fixture(scope="module")
def cross_encoder(ce_sources: dict[str, Path]) -> Any:
    st = pytest.importorskip("sentence_transformers")
    return st.CrossEncoder(str(ce_sources["bert1"]), device="cpu")


def reference(ce: Any, query: str, docs: list[str]) -> np.ndarray:
    """Each document's activated score, in input order, by sentence-transformers' CrossEncoder."""
    return np.asarray(ce.predict([(query, d) for d in docs]), dtype=np.float64)


@pytest.fixture(scope="module")
def server(reranker: Any) -> Iterator[str]:
    pytest.importorskip("starlette")
    from dmeta_embed.serve import ServerConfig, create_app

    with running(create_app(None, ServerConfig(api_key="k"), reranker=reranker)) as base:
        yield base


@pytest.fixture(params=["local", "remote"])
def source(request: pytest.FixtureRequest, reranker: Any) -> dict[str, Any]:
    if request.param == "local":
        return {"reranker": reranker}
    return {"base_url": request.getfixturevalue("server"), "api_key": "k"}


def test_langchain_compressor_keeps_the_best_in_order(source: dict[str, Any], cross_encoder: Any) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from dmeta_embed.integrations.langchain import DmetaRerank

    docs = [Document(page_content=d, metadata={"n": i}, id=f"d{i}") for i, d in enumerate(DOCS)]
    out = DmetaRerank(top_n=3, **source).compress_documents(docs, QUERY)
    want = reference(cross_encoder, QUERY, DOCS)
    order = sorted(range(len(DOCS)), key=lambda i: -want[i])[:3]
    assert [d.metadata["n"] for d in out] == order and [d.id for d in out] == [f"d{i}" for i in order]
    np.testing.assert_allclose([d.metadata["relevance_score"] for d in out], want[order], atol=ATOL, rtol=0)
    assert DmetaRerank(top_n=None, **source).compress_documents([], QUERY) == []


def test_llama_index_postprocessor_keeps_the_best_in_order(
    source: dict[str, Any], cross_encoder: Any
) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    from dmeta_embed.integrations.llama_index import DmetaRerank

    nodes = [NodeWithScore(node=TextNode(text=d, id_=f"n{i}"), score=0.0) for i, d in enumerate(DOCS)]
    out = DmetaRerank(top_n=4, **source).postprocess_nodes(nodes, query_str=QUERY)
    want = reference(cross_encoder, QUERY, DOCS)
    order = sorted(range(len(DOCS)), key=lambda i: -want[i])[:4]
    assert [n.node.node_id for n in out] == [f"n{i}" for i in order]
    np.testing.assert_allclose([n.score for n in out], want[order], atol=ATOL, rtol=0)


def test_remote_refusal_is_a_remote_error(server: str) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from dmeta_embed.integrations.langchain import DmetaRerank

    with pytest.raises(RemoteError) as e:
        DmetaRerank(base_url=server, api_key="wrong").compress_documents([Document(page_content="a")], QUERY)
    assert e.value.status == 401 and "API key" in str(e.value)
    with pytest.raises(TypeError, match="exactly one"):
        DmetaRerank()


@pytest.mark.parametrize(("module", "default_top_n"), [("langchain", 3), ("llama_index", 2)])
def test_both_adapters_are_made_the_same_way(
    module: str, default_top_n: int, ce_export: Path, reranker: Reranker, cross_encoder: Any
) -> None:
    """One constructor (``_rerank.RerankAdapter``): a folder loaded with the load options, a
    loaded Reranker, each adapter's own ``top_n`` default, and exactly one source."""
    pytest.importorskip({"langchain": "langchain_core", "llama_index": "llama_index.core"}[module])
    import importlib

    adapter = importlib.import_module(f"dmeta_embed.integrations.{module}").DmetaRerank
    assert adapter(reranker=reranker).top_n == default_top_n
    from_folder = adapter(ce_export, top_n=None, variant="fp32")
    assert from_folder.top_n is None
    want = reference(cross_encoder, QUERY, DOCS)
    got = from_folder._rank(QUERY, DOCS, None)
    assert [i for i, _ in got] == sorted(range(len(DOCS)), key=lambda i: -want[i])
    np.testing.assert_allclose([score for _, score in got], sorted(want, reverse=True), atol=ATOL, rtol=0)
    with pytest.raises(TypeError, match="exactly one"):
        adapter(ce_export, reranker=reranker)
