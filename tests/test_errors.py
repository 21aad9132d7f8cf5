"""Errors carry their field: each runtime check's InputError names the argument (and the item). No
model is loaded here; assertions are on fields, not on the messages' words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dmeta_embed.errors import InputError
from dmeta_embed.manifest import Manifest, Pooling, TokenizerInfo
from dmeta_embed.runtime.options import check_output
from dmeta_embed.runtime.pipeline import OutputSpec
from dmeta_embed.runtime.quantize import check_precision, quantize
from dmeta_embed.runtime.st_compat import SentenceTransformerAPI
from dmeta_embed.runtime.tokenize import TextTokenizer, check_texts

DIM = 8


def manifest(normalize: bool = True, truncate_dims: tuple[int, ...] = (4, 2), **kw: Any) -> Manifest:
    return Manifest(
        source={},
        pooling=Pooling.CLS,
        normalize=normalize,
        max_length=16,
        dim=DIM,
        tokenizer=TokenizerInfo("tokenizer.json", 0),
        inputs=("input_ids", "attention_mask"),
        output="sentence_embedding",
        variants={},
        export={},
        truncate_dims=truncate_dims,
        **kw,
    )


def refused(call: Any, *args: Any, **kwargs: Any) -> InputError:
    with pytest.raises(InputError) as ei:
        call(*args, **kwargs)
    return ei.value


# -- runtime.options.check_output: the one check of a call's output options


@pytest.mark.parametrize(
    ("normalized", "dim", "normalize", "want"),
    [
        (True, None, None, OutputSpec(None, False)),
        (True, DIM, None, OutputSpec(None, False)),  # the model's own dim: no cut
        (True, 4, None, OutputSpec(4, False)),  # a cut keeps the export's choice: not renormalised
        (True, 4, True, OutputSpec(4, True)),
        (True, None, True, OutputSpec(None, False)),  # normalised in the graph already
        (False, None, True, OutputSpec(None, True)),
        (False, None, False, OutputSpec(None, False)),
        (False, 2, None, OutputSpec(2, False)),
    ],
)
def test_check_output_accepts(
    normalized: bool, dim: int | None, normalize: bool | None, want: OutputSpec
) -> None:
    assert check_output(manifest(normalized), dim, normalize) == want


def test_check_output_passes_the_precision() -> None:
    assert check_output(manifest(), None, None, "ubinary").precision == "ubinary"


@pytest.mark.parametrize(
    ("m", "args", "field"),
    [
        (manifest(), (3, None, "float32"), "truncate_dim"),
        (manifest(), (16, None, "float32"), "truncate_dim"),  # above the model's dim, not listed
        (manifest(truncate_dims=()), (4, None, "float32"), "truncate_dim"),
        (manifest(), (None, False, "float32"), "normalize"),
        (manifest(), (None, None, "int4"), "precision"),
        (manifest(), (3, False, "int4"), "normalize"),  # checked in this order: normalize first
        (manifest(), (3, None, "int4"), "truncate_dim"),
    ],
)
def test_check_output_refusals_name_their_field(m: Manifest, args: tuple[Any, ...], field: str) -> None:
    err = refused(check_output, m, *args)
    assert (err.field, err.index) == (field, None)
    assert err.reason and str(err).endswith(err.reason)  # the reason follows any name for the field


def test_a_refused_dim_lists_the_allowed_dims() -> None:
    err = refused(check_output, manifest(truncate_dims=(4, 2)), 3)
    assert f"{DIM}-dimensional" in str(err) and "4, 2" in str(err)


# -- runtime checks elsewhere: texts, tokenizer, precision, ranges, prompts, st options


@pytest.mark.parametrize(
    ("texts", "index"),
    [(None, None), (3, None), (["a", None], 1), (["a", "b", b"c"], 2), ([1], 0)],
)
def test_check_texts_names_texts_and_the_item(texts: Any, index: int | None) -> None:
    err = refused(check_texts, texts)
    assert (err.field, err.index) == ("texts", index)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "ok": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = Path(tmp_path_factory.mktemp("tok")) / "tokenizer.json"
    tok.save(str(path))
    return TextTokenizer(path, 16)


def test_tokenizer_rejection_names_the_text(tokenizer: TextTokenizer) -> None:
    err = refused(tokenizer.encode, ["ok", "bad \ud800"])
    assert (err.field, err.index) == ("texts", 1) and err.reason is not None
    err = refused(tokenizer.tokens, ["\ud800"])
    assert (err.field, err.index) == ("texts", 0)


def test_precision_and_ranges() -> None:
    assert refused(check_precision, "int4").field == "precision"
    v = np.ones((2, 4), np.float32)
    assert refused(quantize, v, "int4").field == "precision"
    assert refused(quantize, v, "int8").field == "ranges"
    assert refused(quantize, v, "uint8", np.zeros((2, 3))).field == "ranges"


class _Model(SentenceTransformerAPI):
    """The sentence-transformers surface over a hand-made manifest (no tokenizer, no session)."""

    def __init__(self, m: Manifest) -> None:
        self.manifest = m


def test_st_compat_checks_name_their_argument() -> None:
    model = _Model(manifest(prompts={"q": "Q: "}))
    assert model.resolve_prompt("q") == "Q: "
    assert refused(model.resolve_prompt, "nope").field == "prompt_name"
    assert refused(model.resolve_prompt, None, 5).field == "prompt"
    for name, value in [
        ("default_prompt_name", "nope"),
        ("similarity_fn_name", "jaccard"),
        ("truncate_dim", 3),
        ("max_seq_length", 17),  # past the export's max_length
        ("max_seq_length", 1),
    ]:
        err = refused(setattr, model, name, value)
        assert (err.field, err.index) == (name, None), name
    model.truncate_dim = 4  # a listed dim is taken, and kept as given
    assert model.truncate_dim == 4 and model.get_embedding_dimension() == 4
    model.truncate_dim = DIM
    assert model.truncate_dim == DIM
