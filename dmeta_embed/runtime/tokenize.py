"""Text → token ids with the exported folder's ``tokenizer.json``; input checking lives here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ..errors import InputError, ModelLoadError


@dataclass(frozen=True)
class Tokenized:
    """Token ids of each text (unpadded), their lengths, and which texts were truncated."""

    ids: list[list[int]]
    lengths: np.ndarray  # int64 [n]
    truncated: list[int]  # indices into the input
    #: each pair's token type ids (0: the query's segment, 1: the document's), for a rerank graph
    #: that takes them; None: the graph takes none (every embed graph, RoBERTa-style rerankers)
    type_ids: list[list[int]] | None = None

    def row_feed(self, i: int) -> dict[str, np.ndarray]:
        """Row ``i`` alone, unpadded, as a graph's input dict (token types where carried)."""
        ids = np.asarray([self.ids[i]], np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if self.type_ids is not None:
            feed["token_type_ids"] = np.asarray([self.type_ids[i]], np.int64)
        return feed

    def take(self, rows: np.ndarray) -> Tokenized:
        """The rows ``rows``, in that order (their truncation not carried)."""
        types = None if self.type_ids is None else [self.type_ids[i] for i in rows]
        return Tokenized(
            ids=[self.ids[i] for i in rows], lengths=self.lengths[rows], truncated=[], type_ids=types
        )


@dataclass(frozen=True)
class Token:
    """One token of a text as the model sees it (TEI's ``/tokenize`` shape): its id, its text,
    whether it is a special token, and its character span in the text (None for special tokens)."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


def check_texts(texts: object) -> list[str]:
    """Return ``texts`` as a list of str, or raise InputError naming the first bad item."""
    if texts is None:
        raise InputError("texts is None; expected a str or a list of str", field="texts")
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    if not isinstance(texts, Iterable):
        raise InputError(f"texts is {type(texts).__name__}; expected a str or a list of str", field="texts")
    out = texts if isinstance(texts, list) else list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            if isinstance(t, (bytes, bytearray)):
                raise InputError(f"texts[{i}] is bytes; decode it to str first", index=i, field="texts")
            raise InputError(f"texts[{i}] is {type(t).__name__}, expected str", index=i, field="texts")
    return out


def _find_unencodable(texts: Sequence[str]) -> InputError | None:
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            what = f"not valid Unicode (lone surrogate {t[e.start]!r} at position {e.start})"
            return InputError(
                f"texts[{i}] is {what}", index=i, field="texts", reason=f"cannot be tokenised: it is {what}"
            )
    return None


class TextTokenizer:
    """A fast tokenizer with truncation at ``max_length`` and no padding (we pad per batch)."""

    def __init__(self, path: str | Path, max_length: int) -> None:
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception on a bad file
            raise ModelLoadError(f"{path}: cannot load tokenizer ({e})") from e
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        self.max_length = max_length
        unk = getattr(self._tok.model, "unk_token", None)
        #: the id of the model's unknown token (None: its vocabulary has none)
        self.unk_id: int | None = self._tok.token_to_id(unk) if isinstance(unk, str) else None

    def _encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[Any]:
        try:
            return self._tok.encode_batch(texts, add_special_tokens=add_special_tokens)  # type: ignore[no-any-return]
        except (TypeError, ValueError, UnicodeError) as e:
            bad = _find_unencodable(texts)
            if bad is not None:
                raise bad from e
            raise InputError(
                f"tokenizer rejected the input: {e}",
                field="texts",
                reason=f"cannot be tokenised: the tokenizer rejected it ({e})",
            ) from e

    def encode(self, texts: list[str]) -> Tokenized:
        """Tokenise checked texts (see :func:`check_texts`)."""
        encs = self._encode_batch(texts, True)
        ids = [e.ids for e in encs]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        truncated = [i for i, e in enumerate(encs) if e.overflowing]
        return Tokenized(ids=ids, lengths=lengths, truncated=truncated)

    def tokens(self, texts: list[str], add_special_tokens: bool = True) -> list[list[Token]]:
        """Each text's tokens with their character offsets, truncated at max_length as
        :meth:`encode` truncates (so their count is the count the model is fed)."""
        encs = self._encode_batch(texts, add_special_tokens)
        out = []
        for text, enc in zip(texts, encs, strict=True):
            row = []
            for tid, tstr, special, (a, b) in zip(
                enc.ids, enc.tokens, enc.special_tokens_mask, enc.offsets, strict=True
            ):
                if special:
                    row.append(Token(tid, tstr, True, None, None))
                else:
                    row.append(Token(tid, text[a:b], False, a, b))
            out.append(row)
        return out

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text becomes (after truncation, special tokens included)."""
        return self.encode(texts).lengths.tolist()  # type: ignore[no-any-return]


def check_pairs(pairs: object, field: str = "texts") -> list[tuple[str, str]]:
    """Return ``pairs`` as a list of ``(query, document)`` str pairs, or raise InputError naming
    the first bad item (``field``: the caller's name for the argument)."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise InputError(
            f"{field} is {type(pairs).__name__}; expected a list of (query, document) pairs", field=field
        )
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) != 2:
            raise InputError(
                f"{field}[{i}] is not a (query, document) pair", index=i, field=field, reason="is not a pair"
            )
        for t in p:
            if not isinstance(t, str):
                what = f"holds {type(t).__name__}, expected str"
                raise InputError(f"{field}[{i}] {what}", index=i, field=field, reason=what)
        out.append((p[0], p[1]))
    if not out:
        raise InputError(f"{field} is empty: no pairs to score", field=field, reason="is empty")
    return out


class PairTokenizer(TextTokenizer):
    """(query, document) pairs → token ids as transformers tokenises a pair (``tokenizer(queries,
    documents, truncation=True, max_length=...)``, what CrossEncoder does): both with their special
    tokens, cut by ``truncation`` (transformers' pair strategy) to ``max_length`` in all.
    ``token_types``: return each pair's token type ids (the graph takes them)."""

    def __init__(self, path: str | Path, max_length: int, truncation: str, token_types: bool) -> None:
        super().__init__(path, max_length)
        self._tok.enable_truncation(max_length, strategy=truncation)
        self.token_types = token_types

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> Tokenized:
        """Tokenise checked pairs (see :func:`check_pairs`)."""
        try:
            encs = self._tok.encode_batch(pairs, add_special_tokens=True)
        except (TypeError, ValueError, UnicodeError) as e:
            bad = _find_unencodable([t for p in pairs for t in p])
            if bad is not None and bad.index is not None:
                bad.index //= 2  # the pair that holds the text
                raise bad from e
            raise InputError(f"tokenizer rejected the input: {e}", field="texts") from e
        ids = [e.ids for e in encs]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        truncated = [i for i, e in enumerate(encs) if e.overflowing]
        types = [e.type_ids for e in encs] if self.token_types else None
        return Tokenized(ids=ids, lengths=lengths, truncated=truncated, type_ids=types)
