"""A text gets the same vector alone and inside any batch (cos >= 0.9999) from every variant that
``auto`` may load for a server, through ``Embedder`` and through ``serve`` at concurrency 32; a
variant that is not batch-invariant (per-tensor int8) is never ``serve``'s ``auto`` choice."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dmeta_embed.manifest import INVARIANCE_BAR, Precision
from dmeta_embed.runtime import Embedder
from dmeta_embed.runtime.batching import pad
from dmeta_embed.runtime.choice import Objection, Why, batch_invariance_problem
from dmeta_embed.runtime.installed import installed
from dmeta_embed.runtime.plan import make_plan
from tests.helpers import mixed_texts

#: the texts whose vector must not move: a query, one past max_length (1,024 tokens in the tiny
#: model), the empty text, whitespace only, a repeated token (the worst case of per-tensor int8)
PROBES = ["维生素C可以预防感冒吗", "长文本很长" * 260, "", "   ", "好" * 300, "word " * 200, "a"]
BATCH = 32


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def batches_with_probes(seed: int) -> list[list[str]]:
    """Batches of 32 mixed-length texts (queries, passages, texts past max_length), each holding
    every probe at seeded positions."""
    out = []
    for k in range(2):
        batch = mixed_texts(BATCH - len(PROBES), seed=seed + k) + PROBES
        random.Random(seed + k).shuffle(batch)
        out.append(batch)
    return out


def serve_would_load(folder: Path) -> Precision:
    """What ``serve``'s ``auto`` loads from ``folder`` on this machine."""
    return make_plan(folder, profile="server").variant


@pytest.mark.parametrize("name", ["fp32", "fp16", "int8"])
def test_alone_and_in_a_batch_through_embedder(tiny_export: Path, name: str) -> None:
    """Each probe alone vs inside batches of 32: through ``Embedder.encode`` (the runtime's own
    length-sorted batches) and as one padded batch of all 32 (the widest padding any batching can
    give it). Checked for every variant the choice rule calls invariant, fp32 always and per-row
    int8 always; a variant it does not call invariant must not be what ``serve`` loads."""
    if name == "fp16" and not installed().cuda:
        pytest.skip("fp16 is auto's choice on CUDA only, and CUDA is not available here")
    # the variant itself (the guard routes some probes to fp32: tests/test_guard.py)
    emb = Embedder.load(tiny_export, variant=name, guard=False)
    spec = emb.manifest.variants[name]
    problem = batch_invariance_problem(emb.manifest, Precision(name))
    if name == "fp32" or spec.int8.per_row:
        assert problem is None, problem  # invariant by construction: the rule must say so
    elif name == "int8":  # one activation scale per batch: batch-dependent by construction
        assert problem == Objection(Precision.INT8, Why.PER_TENSOR_INT8)
    if problem:  # e.g. per-tensor int8: then serve's auto must not load it
        assert serve_would_load(tiny_export) != Precision(name), problem
        return
    alone = np.stack([emb.encode([t])[0] for t in PROBES])
    for batch in batches_with_probes(seed=18):
        where = [batch.index(t) for t in PROBES]
        got = emb.encode(batch)[where]
        assert cos(got, alone).min() >= INVARIANCE_BAR, (name, cos(got, alone))
        tok = emb.pipeline.prepare(batch).tokens
        ids, mask = pad(tok.ids, np.arange(len(batch)), emb.manifest.tokenizer.pad_token_id)
        one_batch = emb.pipeline.runner.run(ids, mask)[where]  # all 32 padded together
        assert cos(one_batch, alone).min() >= INVARIANCE_BAR, (name, cos(one_batch, alone))


# -- through the server ------------------------------------------------------------------------------


def test_serve_at_concurrency_32_answers_as_encode_alone(tiny_export: Path) -> None:
    """32 concurrent one-text requests and a few batch requests, queued together behind the warm-up
    so they share inference batches, then a free-running wave of 32 threads: every answer matches
    a direct ``encode`` of that text alone; the server says it serves an invariant variant."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from dmeta_embed.serve import ServerConfig, create_app, load_embedder
    from tests.helpers import running

    cfg = ServerConfig(max_wait_ms=5)
    emb = load_embedder(tiny_export, cfg)  # exactly as `dmeta-embed serve` loads it
    int8 = emb.manifest.variants["int8"]
    assert emb.variant != Precision.INT8 or int8.int8.per_row, emb.choice.reason
    singles = mixed_texts(BATCH - len(PROBES), seed=32) + PROBES
    groups = [mixed_texts(6, seed=100 + k) for k in range(3)]
    alone = {t: emb.encode([t])[0] for t in singles + [t for g in groups for t in g]}

    opened = threading.Event()

    def gate(embedder: Embedder) -> None:
        assert opened.wait(60)

    def metric(c: httpx.Client, name: str) -> float:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    with running(create_app(emb, cfg, warmup=gate)) as base, httpx.Client(base_url=base, timeout=60) as c:

        def call(texts: list[str]) -> np.ndarray:
            r = c.post("/v1/embeddings", json={"input": texts, "model": "m"})
            assert r.status_code == 200, r.text
            return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)

        requests = [[t] for t in singles] + groups
        random.Random(7).shuffle(requests)
        with ThreadPoolExecutor(len(requests)) as pool:
            queued = [pool.submit(call, r) for r in requests]
            n_inputs = sum(map(len, requests))
            end = time.monotonic() + 60
            while metric(c, "dmeta_embed_queue_depth") < n_inputs:  # all waiting behind the warm-up
                assert time.monotonic() < end, "requests did not queue"
                time.sleep(0.02)
            opened.set()
            answers = [f.result() for f in queued]
        # they shared batches: fewer inference steps than requests
        assert metric(c, "dmeta_embed_batch_requests_count") < len(requests)
        with ThreadPoolExecutor(BATCH) as pool:  # concurrency 32, free-running
            answers += list(pool.map(call, requests))
        info = c.get("/info").json()
    for texts, got in zip(requests + requests, answers, strict=True):
        want = np.stack([alone[t] for t in texts])
        assert cos(got, want).min() >= INVARIANCE_BAR, (info["variant"], cos(got, want))
    assert info["variant"] == emb.variant.value and info["batch_invariant"] is True
