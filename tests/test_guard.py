"""The guard: texts made of one token over and over run on the fp32 graph, decided per text from its
token ids (so alone or in any batch alike); every other text runs on the plan's variant."""

from __future__ import annotations

import numpy as np
import pytest

from dmeta_embed import Embedder
from dmeta_embed.runtime import guard
from dmeta_embed.runtime.plan import make_plan
from dmeta_embed.runtime.tokenize import Tokenized


@pytest.mark.parametrize(
    ("body", "routed"),
    [
        ([7] * 8, True),  # one token, long enough
        ([7] * 7, False),  # too short to say
        ([7, 8] * 8, True),  # a token at exactly half
        ([7, 8, 9] * 8, False),  # a third each: prose-like enough
        ([7] * 5 + list(range(100, 106)), False),  # 5 of 11
        ([7] * 6 + list(range(100, 106)), True),  # 6 of 12
    ],
)
def test_the_rule_counts_the_body_between_special_tokens(body, routed):
    assert guard.dominated([101, *body, 102]) is routed


def test_routed_rows_and_take():
    ids = [[101, *([5] * 10), 102], [101, 1, 2, 3, 102], [101, *([9, 9, 9, 4] * 4), 102]]
    tok = Tokenized(ids=ids, lengths=np.array([len(i) for i in ids]), truncated=[])
    rows = guard.routed(tok)
    assert rows.tolist() == [0, 2]
    part = guard.take(tok, rows)
    assert part.ids == [ids[0], ids[2]] and part.lengths.tolist() == [12, 18]


TEXTS = ["胡子长得太快怎么办？", "好 " * 40, "在香港哪里买手表好", "的" * 60, "a short query"]


def test_int8_routes_dominated_texts_to_fp32_and_keeps_the_rest(tiny_export):
    int8 = Embedder.load(tiny_export, variant="int8", provider="cpu")
    fp32 = Embedder.load(tiny_export, variant="fp32", provider="cpu")
    raw = Embedder.load(tiny_export, variant="int8", provider="cpu", guard=False)
    assert int8.plan.guard and not fp32.plan.guard and not raw.plan.guard
    assert int8.plan.to_dict()["guard"] is True
    got, ref, unguarded = int8.encode(TEXTS), fp32.encode(TEXTS), raw.encode(TEXTS)
    unk = int8.tokenizer.unk_id
    dominated = [guard.dominated(ids, unk) for ids in int8.tokenizer.encode(TEXTS).ids]
    assert dominated == [False, True, False, True, False]
    for i, d in enumerate(dominated):
        # routed texts: fp32's vector exactly; the others: int8's own
        np.testing.assert_allclose(got[i], ref[i] if d else unguarded[i], atol=1e-6)
    # a routed text alone and inside a batch: the same vector
    np.testing.assert_allclose(int8.encode([TEXTS[1]])[0], got[1], atol=1e-6)


def test_the_plan_guards_only_where_fp32_can_run(tiny_export):
    assert not make_plan(tiny_export, "fp32").guard
    assert make_plan(tiny_export, "int8", "cpu").guard
    assert not make_plan(tiny_export, "int8", "cpu", guard=False).guard


def test_the_unknown_token_never_dominates():
    unk = 100
    assert not guard.dominated([101, *([unk] * 20), 102], unk_id=unk)  # a script the vocabulary lacks
    assert guard.dominated([101, *([unk] * 20), 102], unk_id=None)
    # a real token still dominates among unknown ones: its share of the whole body counts
    assert guard.dominated([101, *([7] * 10), *([unk] * 10), 102], unk_id=unk)
    assert not guard.dominated([101, *([7] * 4), *([unk] * 16), 102], unk_id=unk)
