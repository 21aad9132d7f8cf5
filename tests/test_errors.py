"""Errors carry their field: each runtime check's InputError names the argument (and the item), the
server's parsers name the request field and a kind, and one table maps both to HTTP. No model is
loaded here; assertions are on fields, kinds and statuses, not on the messages' words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dmeta_embed.errors import InputError, TooLongError
from dmeta_embed.manifest import Manifest, Pooling, TokenizerInfo
from dmeta_embed.runtime.options import OutputSpec, check_output
from dmeta_embed.runtime.quantize import check_precision, quantize
from dmeta_embed.runtime.st_compat import SentenceTransformerAPI
from dmeta_embed.runtime.tokenize import TextTokenizer, check_texts
from dmeta_embed.serve.batcher import Overloaded
from dmeta_embed.serve.config import ServerConfig
from dmeta_embed.serve.errors import STATUS, Kind, RequestError, refusal, to_request_error
from dmeta_embed.serve.schemas import parse_openai, parse_tei, parse_tokenize

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


# -- the server: parsers raise a kind and a field, the edge's table gives the status

CFG = ServerConfig(max_inputs=2, max_chars=5)


@pytest.mark.parametrize(
    ("parse", "body", "kind", "field", "index"),
    [
        (parse_openai, [], Kind.INVALID, None, None),
        (parse_openai, {}, Kind.INVALID, "input", None),
        (parse_openai, {"input": []}, Kind.INVALID, "input", None),
        (parse_openai, {"input": 5}, Kind.INVALID, "input", None),
        (parse_openai, {"input": ["a", None]}, Kind.INVALID, "input", 1),
        (parse_openai, {"input": ["a", "b", "c"]}, Kind.MAX_INPUTS, "input", None),
        (parse_openai, {"input": ["a", "toolong"]}, Kind.MAX_CHARS, "input", 1),
        (parse_openai, {"input": "a", "model": 3}, Kind.INVALID, "model", None),
        (parse_openai, {"input": "a", "encoding_format": "hex"}, Kind.INVALID, "encoding_format", None),
        (parse_openai, {"input": "a", "dimensions": 0}, Kind.INVALID, "dimensions", None),
        (parse_openai, {"input": "a", "precision": 8}, Kind.INVALID, "precision", None),
        (parse_tei, {"input": "a"}, Kind.INVALID, "inputs", None),
        (parse_tei, {"inputs": "a", "normalize": "yes"}, Kind.INVALID, "normalize", None),
        (parse_tei, {"inputs": "a", "truncate": 1}, Kind.INVALID, "truncate", None),
        (
            parse_tei,
            {"inputs": "a", "truncation_direction": "left"},
            Kind.INVALID,
            "truncation_direction",
            None,
        ),
        (parse_tei, {"inputs": "a", "prompt_name": 1}, Kind.INVALID, "prompt_name", None),
        (parse_tei, {"inputs": ["a", "b", "c"]}, Kind.MAX_INPUTS, "inputs", None),
        (parse_tokenize, {"inputs": [{"text": "a"}]}, Kind.INVALID, "inputs", 0),
        (
            parse_tokenize,
            {"inputs": "a", "add_special_tokens": "no"},
            Kind.INVALID,
            "add_special_tokens",
            None,
        ),
    ],
)
def test_parsers_raise_a_kind_and_a_field(
    parse: Any, body: object, kind: Kind, field: str | None, index: int | None
) -> None:
    with pytest.raises(RequestError) as ei:
        parse(body, CFG)
    assert (ei.value.kind, ei.value.field, ei.value.index) == (kind, field, index)


def test_what_only_the_model_judges_is_left_to_the_runtime() -> None:
    req = parse_openai({"input": "a", "dimensions": 3, "precision": "int4", "prompt_name": "x"}, CFG)
    assert (req.dimensions, req.precision, req.prompt_name) == (3, "int4", "x")
    assert parse_tei({"inputs": "a", "normalize": False}, CFG).normalize is False


def http(exc: Exception, tei: bool) -> tuple[int, str | None, str | None, dict[str, str]]:
    """(status, OpenAI param, OpenAI code, headers) of ``exc`` on one API shape."""
    err = to_request_error(exc, tei=tei, max_length=16)
    assert err is not None
    out = refusal(err, tei=tei)
    if tei:
        assert set(out.body) == {"error", "error_type"} and isinstance(out.body["error"], str)
        return out.status, None, None, out.headers
    body = out.body["error"]
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    return out.status, body["param"], body["code"], out.headers


@pytest.mark.parametrize(
    ("exc", "openai", "tei"),
    [
        # runtime InputErrors: the request's field names, with the index
        (InputError("m", field="truncate_dim", reason="r"), (400, "dimensions", None), 422),
        (InputError("m", field="precision", reason="r"), (400, "precision", None), 422),
        (InputError("m", field="normalize", reason="r"), (400, "normalize", None), 422),
        (InputError("m", field="prompt_name", reason="r"), (400, "prompt_name", None), 422),
        (InputError("m", 1, field="texts", reason="r"), (400, "input[1]", None), 422),
        (InputError("m", field="texts"), (400, "input", None), 422),
        (TooLongError("m", 2), (413, "input[2]", "max_length"), 413),
        # the parsers' and the routes' own
        (RequestError("m", field="model"), (400, "model", None), 422),
        (RequestError("m", Kind.MALFORMED), (400, None, None), 400),
        (RequestError("m", Kind.MAX_INPUTS, field="input"), (413, "input", "max_inputs"), 413),
        (RequestError("m", Kind.MAX_CHARS, field="input", index=3), (413, "input[3]", "max_chars"), 413),
        (RequestError("m", Kind.MAX_BODY_BYTES), (413, None, "max_body_bytes"), 413),
        (RequestError("m", Kind.UNAUTHORIZED), (401, None, None), 401),
        (RequestError("m", Kind.TIMEOUT), (503, None, "timeout"), 503),
        (RequestError("m", Kind.CLIENT_CLOSED), (499, None, "client_closed"), 499),
        (RequestError("m", Kind.INTERNAL), (500, None, None), 500),
        (Overloaded("full"), (503, None, "overloaded"), 503),
    ],
)
def test_one_table_maps_every_refusal(exc: Exception, openai: tuple[int, Any, Any], tei: int) -> None:
    assert http(exc, tei=False)[:3] == openai
    assert http(exc, tei=True)[0] == tei


def test_tei_names_its_fields_in_the_message() -> None:
    err = to_request_error(InputError("texts[1] x", 1, field="texts"), tei=True, max_length=16)
    assert err is not None and (err.field, err.index) == ("inputs", 1)
    err = to_request_error(InputError("m", field="truncate_dim", reason="r"), tei=True, max_length=16)
    assert err is not None and err.message.startswith("'dimensions' ")


def test_headers_and_bugs() -> None:
    assert http(Overloaded("full"), tei=True)[3] == {"Retry-After": "1"}
    assert http(RequestError("m", Kind.TIMEOUT), tei=False)[3] == {"Retry-After": "1"}
    assert http(RequestError("m", Kind.UNAUTHORIZED), tei=False)[3] == {"WWW-Authenticate": "Bearer"}
    assert http(RequestError("m"), tei=False)[3] == {}
    assert to_request_error(KeyError("a bug"), tei=False, max_length=16) is None
    assert set(STATUS) == set(Kind)  # every kind has its row
