"""LangChain: DmetaEmbeddings passes langchain_tests' standard suites, equals Embedder, never blocks
the event loop; langchain_openai's OpenAIEmbeddings talks to `dmeta-embed serve`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "langchain_core", reason="needs the langchain extra: pip install 'dmeta-embed[langchain]'"
)
lt_unit = pytest.importorskip("langchain_tests.unit_tests", reason="needs langchain-tests (dev extra)")
from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402

from dmeta_embed import Embedder  # noqa: E402
from dmeta_embed.integrations.langchain import DmetaEmbeddings  # noqa: E402

TEXTS = ["维生素C可以预防感冒吗", "今天天气很好", "", "a short English query", "长文本" * 60]
_FOLDER: dict[str, Path] = {}


@pytest.fixture(autouse=True)
def _folder(tiny_export: Path) -> None:
    # the standard suites build the model from a property, which cannot take a fixture
    _FOLDER["tiny"] = tiny_export


class _Params:
    @property
    def embeddings_class(self) -> type[DmetaEmbeddings]:
        return DmetaEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_path": _FOLDER["tiny"], "variant": "fp32"}


class TestDmetaEmbeddingsUnit(_Params, lt_unit.EmbeddingsUnitTests):
    pass


# the suite's async tests carry no marker (langchain runs pytest-asyncio in auto mode) and it
# forbids overriding them: mark the class, and silence the note that its sync tests carry the mark
@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async function")
class TestDmetaEmbeddingsIntegration(_Params, EmbeddingsIntegrationTests):
    pass


def test_vectors_equal_embedder(tiny_export: Path) -> None:
    emb = DmetaEmbeddings(model_path=tiny_export, variant="fp32", batch_size=2)
    ref = Embedder.load(tiny_export, variant="fp32")
    docs = emb.embed_documents(TEXTS)
    assert len(docs) == len(TEXTS) and all(len(v) == ref.dim for v in docs)
    np.testing.assert_array_equal(np.asarray(docs, np.float32), ref.encode(TEXTS))
    np.testing.assert_array_equal(np.asarray(emb.embed_query(TEXTS[0]), np.float32), ref.encode(TEXTS[0]))
    assert emb.embed_documents([]) == []
    assert isinstance(docs[0][0], float)
    with pytest.raises(TypeError, match="exactly one"):
        DmetaEmbeddings()


def test_async_does_not_block_the_loop(tiny_export: Path) -> None:
    emb = DmetaEmbeddings(model_path=tiny_export, variant="fp32")
    texts = [f"第{i}段：" + "长文本内容" * (i % 40 + 1) for i in range(1500)]

    async def main() -> tuple[int, float, list[list[float]]]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.002)

        task = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        out = await emb.aembed_documents(texts)
        elapsed = time.perf_counter() - t0
        done.set()
        await task
        return ticks, elapsed, out

    ticks, elapsed, out = asyncio.run(main())
    assert len(out) == len(texts)
    # a blocking call would let the ticker run once; here it keeps ticking for the whole encode
    assert elapsed > 0.05, "the batch was too small to tell"
    assert ticks >= 10, (ticks, elapsed)
    np.testing.assert_array_equal(np.asarray(out[:3], np.float32), emb.embedder.encode(texts[:3]))


def test_openai_embeddings_against_the_server(tiny_export: Path) -> None:
    lc_openai = pytest.importorskip("langchain_openai", reason="needs langchain-openai (dev extra)")
    pytest.importorskip("starlette", reason="needs the server extra")
    from dmeta_embed.serve import create_app
    from tests.helpers import running

    embedder = Embedder.load(tiny_export, variant="fp32")
    with running(create_app(embedder)) as base:
        # check_embedding_ctx_length=False: otherwise it tokenises with tiktoken (OpenAI's tokenizer,
        # fetched from the network) and sends token ids, which the server refuses
        oa = lc_openai.OpenAIEmbeddings(
            model="dmeta",
            base_url=base + "/v1",
            api_key="unused",
            check_embedding_ctx_length=False,
            max_retries=0,
        )
        got = np.asarray(oa.embed_documents(TEXTS[:4]), np.float32)
        q = np.asarray(oa.embed_query(TEXTS[0]), np.float32)
    ref = embedder.encode(TEXTS[:4])
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_allclose(q, ref[0], atol=1e-6)
