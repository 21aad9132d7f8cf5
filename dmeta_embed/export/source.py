"""Find the model to export (local folder or hub id) and read what its files say.

Pooling comes from sentence-transformers' ``1_Pooling/config.json`` when present, else the
caller's flag, else CLS with a warning. Max length from ``sentence_bert_config.json``, else the
tokenizer's, capped by ``max_position_embeddings``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError, ModelLoadError
from ..manifest import Pooling
from ..rerank_records import RerankSpec, Task
from .rerank_source import is_cross_encoder, rerank_spec

log = logging.getLogger(__name__)

DEFAULT_MODEL = "DMetaSoul/Dmeta-embedding"

#: model_types whose ONNX graph ONNX Runtime's "bert" optimizer knows how to fuse (MPNet's
#: attention, which adds a relative-position bias, is fused by ``export.relative_attention``)
SUPPORTED_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "mpnet"})
#: model_types whose position ids start after padding_idx + 1 (RoBERTa's scheme): two of their
#: ``max_position_embeddings`` are never a text position
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert", "mpnet"})

#: tokenizer "model_max_length" values that mean "no limit set"
_UNSET_MAX = 10**9


@dataclass(frozen=True)
class Source:
    """A resolved model folder and the facts the export needs from it."""

    path: Path
    model_id: str
    revision: str | None
    model_type: str
    pooling: Pooling
    pooling_origin: str
    normalize: bool
    normalize_origin: str
    max_length: int
    config: dict[str, Any]
    trust_remote_code: bool = False
    #: from ``config_sentence_transformers.json`` (see :func:`st_prompts`)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    #: Matryoshka dims the caller says the model was trained for (``export --truncate-dims``)
    truncate_dims: tuple[int, ...] = ()
    #: a cross-encoder (``...ForSequenceClassification``) is a rerank export: logits, no pooling
    task: Task = Task.EMBED
    rerank: RerankSpec | None = None

    @property
    def token_types(self) -> bool:
        """Whether the graph takes token type ids: a rerank model whose type vocabulary has more
        than one entry (a BERT cross-encoder puts the document in segment 1)."""
        return self.task == Task.RERANK and int(self.config.get("type_vocab_size", 1) or 1) > 1


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text("utf-8"))  # type: ignore[no-any-return]
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: unreadable JSON ({e})") from e


#: files a fast tokenizer can be built from (tokenizer.json, or a slow tokenizer's vocabulary)
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
    "vocab.json",
)


def check_safetensors(path: Path) -> None:
    """Read ``path``'s header (8-byte length, JSON table of tensors) and check that the data it
    describes fits the file: a damaged or truncated file fails here, in one line naming it, not
    deep inside transformers."""
    if not path.is_file():
        return
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > size - 8:
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ModelLoadError(
            f"{path}: damaged safetensors file ({e}); download or save the model again"
        ) from e
    if ends and max(ends) > size - 8 - n:
        raise ModelLoadError(
            f"{path}: truncated safetensors file (tensors need {max(ends) + 8 + n} bytes, "
            f"the file has {size}); download or save the model again"
        )


def check_tokenizer_files(folder: Path) -> None:
    """A folder without any tokenizer file cannot be exported: say so, naming the files looked for."""
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"{folder}: no tokenizer file (looked for {', '.join(TOKENIZER_FILES)})")


def download(model_id: str, revision: str | None) -> Path:
    """Fetch a hub model into the local HF cache; fail fast (one clear line) when offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.txt", "*.safetensors", "*.model", "1_Pooling/*", "*.bin"]
    try:
        # the local cache first: no network when the model was fetched before
        return Path(
            snapshot_download(model_id, revision=revision, local_files_only=True, allow_patterns=patterns)
        )
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    try:
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=patterns, etag_timeout=10))
    except (LocalEntryNotFoundError, OSError, HfHubHTTPError) as e:
        raise ModelLoadError(
            f"cannot download '{model_id}' from the Hugging Face hub ({type(e).__name__}); "
            "if you are offline, pass a local model folder instead"
        ) from e


def _pooling_from_st(folder: Path) -> Pooling | None:
    modules = _read_json(folder / "modules.json")
    pool_dir = "1_Pooling"
    if isinstance(modules, list):
        for m in modules:
            if str(m.get("type", "")).endswith("Pooling"):
                pool_dir = m.get("path") or pool_dir
    cfg = _read_json(folder / pool_dir / "config.json")
    if not isinstance(cfg, dict):
        return None
    if cfg.get("pooling_mode_cls_token"):
        return Pooling.CLS
    if cfg.get("pooling_mode_mean_tokens"):
        return Pooling.MEAN
    if cfg.get("pooling_mode_lasttoken"):
        return Pooling.LAST
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
    raise ExportError(f"{pool_dir}/config.json asks for pooling {modes}; supported: cls, mean, last")


def _has_normalize(folder: Path) -> bool:
    modules = _read_json(folder / "modules.json")
    return isinstance(modules, list) and any(str(m.get("type", "")).endswith("Normalize") for m in modules)


def st_prompts(folder: Path) -> tuple[dict[str, str], str | None, str]:
    """(prompts, default_prompt_name, similarity_fn_name) as sentence-transformers reads them from
    ``config_sentence_transformers.json``: a None prompt means "", a default must name a prompt."""
    cfg = _read_json(folder / "config_sentence_transformers.json")
    if not isinstance(cfg, dict):
        return {}, None, "cosine"
    raw = cfg.get("prompts") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, (str, type(None))) for v in raw.values()):
        raise ModelLoadError(
            f"{folder}/config_sentence_transformers.json: 'prompts' is not a name → text map"
        )
    prompts = {str(k): v or "" for k, v in raw.items()}
    default = cfg.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ModelLoadError(
            f"{folder}/config_sentence_transformers.json: default_prompt_name {default!r} "
            f"is not one of its prompts ({', '.join(prompts) or 'none'})"
        )
    if any(prompts.values()) and _pooling_excludes_prompt(folder):
        # our graph pools every token it is given; sentence-transformers would skip the prompt's
        log.warning(
            "%s pools without its prompt tokens (include_prompt=false); prompted embeddings "
            "will differ from sentence-transformers'",
            folder,
        )
    return prompts, default, str(cfg.get("similarity_fn_name") or "cosine")


def _pooling_excludes_prompt(folder: Path) -> bool:
    cfg = _read_json(folder / "1_Pooling" / "config.json")
    return isinstance(cfg, dict) and cfg.get("include_prompt") is False


def resolve(
    model: str,
    *,
    revision: str | None = None,
    pooling: Pooling | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
    truncate_dims: tuple[int, ...] = (),
    activation: str | None = None,
) -> Source:
    """Resolve ``model`` (folder or hub id) and decide pooling, normalisation and max length; a
    cross-encoder (``export.rerank_source``) becomes a rerank source, its activation read from
    its files unless ``activation`` names one."""
    path = Path(model).expanduser()
    looks_local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise ModelLoadError(f"model folder not found: {model}")
        model_id = str(path.resolve())
    else:
        model_id = model
        path = download(model, revision)

    config = _read_json(path / "config.json")
    if not isinstance(config, dict):
        raise ModelLoadError(
            f"{model}: no config.json; not a transformers or sentence-transformers model folder"
        )
    model_type = str(config.get("model_type", ""))
    if model_type not in SUPPORTED_MODEL_TYPES and trust_remote_code:
        log.warning(
            "model_type %r is not a known BERT-style type: exporting with its remote code; "
            "ONNX Runtime's fusions may not apply",
            model_type,
        )
    elif model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{model}: unsupported architecture model_type={model_type!r}; "
            f"supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))}"
        )
    if not any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise ModelLoadError(f"{model}: no weights (model.safetensors or pytorch_model.bin)")
    check_safetensors(path / "model.safetensors")
    check_tokenizer_files(path)

    rerank = rerank_spec(path, config, activation) if is_cross_encoder(config) else None
    if rerank is None and activation is not None:
        raise ExportError(f"{model}: --activation applies to a cross-encoder; this is an embedding model")
    st_pooling = _pooling_from_st(path) if rerank is None else None
    if rerank is not None:
        if pooling is not None or normalize is not None:
            log.warning("%s is a cross-encoder: --pooling and --normalize do not apply", model)
        # the classification head reads the first token; its logits are not normalised
        chosen, origin = Pooling.CLS, "classification head"
        pooling, normalize = None, False
    elif st_pooling is not None:
        if pooling is not None and pooling != st_pooling:
            log.warning("model files say pooling=%s; ignoring --pooling %s", st_pooling.value, pooling.value)
        chosen, origin = st_pooling, "1_Pooling/config.json"
    elif pooling is not None:
        chosen, origin = pooling, "flag"
    else:
        log.warning("%s has no 1_Pooling/config.json and no --pooling given: using CLS", model)
        chosen, origin = Pooling.CLS, "default (cls)"

    if rerank is not None:
        normalize, normalize_origin = False, "cross-encoder (raw logits)"
    elif normalize is not None:
        normalize_origin = "flag"
    else:
        # embedding models are compared by cosine: on by default, explicit with a Normalize module
        normalize = True
        normalize_origin = "Normalize module" if _has_normalize(path) else "default (on)"

    positions = int(config.get("max_position_embeddings", 512))
    if model_type in OFFSET_POSITIONS:
        positions -= 2  # position ids start after padding_idx + 1
    st_cfg = _read_json(path / "sentence_bert_config.json")
    tok_cfg = _read_json(path / "tokenizer_config.json")
    file_max = None
    if isinstance(st_cfg, dict) and st_cfg.get("max_seq_length"):
        file_max = int(st_cfg["max_seq_length"])
    elif isinstance(tok_cfg, dict) and int(tok_cfg.get("model_max_length") or _UNSET_MAX) < _UNSET_MAX:
        file_max = int(tok_cfg["model_max_length"])
    limit = min(file_max or positions, positions)
    if max_length is not None:
        if max_length < 2:
            raise ExportError(f"--max-length must be at least 2, got {max_length}")
        if max_length > positions:
            raise ExportError(f"--max-length {max_length} exceeds the model's {positions} positions")
        limit = max_length

    prompts, default_prompt, similarity = st_prompts(path)
    hidden = int(config.get("hidden_size", 0))
    bad = [d for d in truncate_dims if not 0 < d <= hidden]
    if bad:
        raise ExportError(f"--truncate-dims {bad} outside 1..{hidden} (the model's hidden size)")
    if rerank is not None and truncate_dims:
        raise ExportError("--truncate-dims applies to an embedding model; this is a cross-encoder")
    return Source(
        path=path,
        model_id=model_id,
        revision=revision,
        model_type=model_type,
        pooling=chosen,
        pooling_origin=origin,
        normalize=normalize,
        normalize_origin=normalize_origin,
        max_length=limit,
        config=config,
        trust_remote_code=trust_remote_code,
        prompts=prompts,
        default_prompt_name=default_prompt,
        similarity_fn_name=similarity,
        truncate_dims=tuple(sorted(set(truncate_dims), reverse=True)),
        task=Task.EMBED if rerank is None else Task.RERANK,
        rerank=rerank,
    )
