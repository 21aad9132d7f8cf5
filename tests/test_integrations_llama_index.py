"""LlamaIndex: DmetaEmbedding embeds a whole batch in one Embedder call and equals Embedder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "llama_index.core", reason="needs the llama-index extra: pip install 'dmeta-embed[llama-index]'"
)

from dmeta_embed import Embedder  # noqa: E402
from dmeta_embed.integrations.llama_index import DEFAULT_EMBED_BATCH_SIZE, DmetaEmbedding  # noqa: E402

TEXTS = [f"第{i}条：" + "维生素C可以预防感冒吗" * (i % 7 + 1) for i in range(300)]


class Counting(Embedder):
    """An Embedder that counts its encode calls and the texts in each."""

    calls: list[int]

    def encode(self, texts, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        self.calls.append(1 if isinstance(texts, str) else len(texts))
        return super().encode(texts, *args, **kwargs)


@pytest.fixture
def counting(tiny_export: Path) -> Counting:
    e = Counting.load(tiny_export, variant="fp32")
    e.calls = []
    return e


def test_one_call_embeds_the_whole_batch(counting: Counting, tiny_export: Path) -> None:
    model = DmetaEmbedding(embedder=counting)
    assert model.embed_batch_size == DEFAULT_EMBED_BATCH_SIZE == 512
    got = model.get_text_embedding_batch(TEXTS)
    assert counting.calls == [len(TEXTS)]  # the base class would call once per text
    ref = Embedder.load(tiny_export, variant="fp32").encode(TEXTS)
    np.testing.assert_array_equal(np.asarray(got, np.float32), ref)
    counting.calls.clear()
    small = DmetaEmbedding(embedder=counting, embed_batch_size=128)
    small.get_text_embedding_batch(TEXTS)
    assert counting.calls == [128, 128, 44]
    counting.calls.clear()
    got = asyncio.run(model.aget_text_embedding_batch(TEXTS))
    assert counting.calls == [len(TEXTS)]
    np.testing.assert_array_equal(np.asarray(got, np.float32), ref)


def test_query_and_single_text_equal_embedder(tiny_export: Path) -> None:
    model = DmetaEmbedding(model_path=tiny_export, variant="fp32", batch_size=4)
    ref = Embedder.load(tiny_export, variant="fp32")
    assert model.model_path == str(tiny_export) and model.class_name() == "DmetaEmbedding"
    np.testing.assert_array_equal(
        np.asarray(model.get_query_embedding(TEXTS[0]), np.float32), ref.encode_query(TEXTS[0])
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_text_embedding(TEXTS[5]), np.float32), ref.encode(TEXTS[5])
    )
    np.testing.assert_array_equal(
        np.asarray(asyncio.run(model.aget_query_embedding(TEXTS[1])), np.float32), ref.encode(TEXTS[1])
    )
    assert model.embedder.batch_size == 4  # Embedder.load options pass through
    with pytest.raises(TypeError, match="exactly one"):
        DmetaEmbedding()


def test_vector_store_index_retrieves_with_it(tiny_export: Path) -> None:
    from llama_index.core import Document, VectorStoreIndex

    model = DmetaEmbedding(model_path=tiny_export, variant="fp32")
    docs = [
        Document(text=t, id_=str(i))
        for i, t in enumerate(["苹果是一种水果", "北京是中国的首都", "猫喜欢睡觉"])
    ]
    index = VectorStoreIndex.from_documents(docs, embed_model=model)
    hits = index.as_retriever(similarity_top_k=1).retrieve("北京是中国的首都")
    assert hits[0].node.get_content() == "北京是中国的首都" and hits[0].score == pytest.approx(1.0, abs=1e-4)
