"""Random-weight BERT folders with Dmeta's config keys and a synthetic CJK vocab.

Repository tooling, not part of the wheel: the tests build their models from it
(``tests/conftest.py``) and the benchmarks their Dmeta-shaped stand-in
(``benchmarks/build_dmeta_shaped.py``), both as ``tests.random_models`` from a checkout. The export
pipeline depends only on the architecture, so ``tiny`` serves the tests; ``dmeta`` has the real
model's shape for the shape run (speed of a variant whose quantized nodes a fidelity search picks
still depends on the weights: see docs/performance.md). ``build_model`` needs the ``export``
extra (torch, transformers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dmeta_embed.manifest import Pooling

DMETA_CONFIG: dict[str, Any] = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 1024,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 21128,
}

# initializer_range is raised from BERT's 0.02: at 0.02 a random BERT gives nearly the same
# vector for every text (pairwise cosine ≈ 0.9999 in the tiny shape), and parity tests could not
# tell texts apart. Measured pairwise cosine of different texts: tiny 0.43–0.89, dmeta 0.81–0.96.
SHAPES: dict[str, dict[str, Any]] = {
    "dmeta": {"initializer_range": 0.05},
    "tiny": {
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "initializer_range": 0.4,
    },
}

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

#: written into every folder built here: the benchmark reads it to label a run on random weights
#: the "shape run" (its speed is the shape's; its fidelity says nothing about real weights)
MARKER = "random_weights.json"


def synthetic_vocab(size: int = 21128) -> list[str]:
    """A WordPiece vocab shaped like bert-base-chinese: specials, ASCII, CJK, ``##`` pieces."""
    ascii_ = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    punct = list("，。！？、；：“”‘’（）《》【】…—·￥％")
    latin = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "for",
        "on",
        "with",
        "as",
        "watch",
        "hong",
        "kong",
        "beard",
        "embedding",
        "model",
        "onnx",
        "bert",
        "##s",
        "##ing",
        "##ed",
        "##er",
    ]
    cjk = [chr(c) for c in range(0x4E00, 0x9FA6)]  # the CJK Unified Ideographs block
    vocab = _SPECIALS + ascii_ + punct + latin + cjk
    pieces = ["##" + chr(c) for c in range(0x4E00, 0x9FA6)]
    vocab += pieces[: max(0, size - len(vocab))]
    vocab += [f"[unused{i}]" for i in range(size - len(vocab))]
    return vocab[:size]


def build_model(
    folder: str | Path,
    shape: str = "tiny",
    *,
    seed: int = 0,
    pooling: Pooling = Pooling.CLS,
    max_seq_length: int = 1024,
    with_tokenizer_json: bool = False,
    sentence_transformers_files: bool = True,
) -> Path:
    """Write a random-weight BERT with Dmeta's config keys into ``folder`` and return it."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = DMETA_CONFIG | SHAPES[shape]
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**cfg), add_pooling_layer=False).eval()
    model.save_pretrained(folder, safe_serialization=True)

    marker = {"shape": shape, "seed": seed, "note": "random weights: a shape stand-in, not a trained model"}
    (folder / MARKER).write_text(json.dumps(marker), "utf-8")
    (folder / "vocab.txt").write_text("\n".join(synthetic_vocab(cfg["vocab_size"])) + "\n", "utf-8")
    tok_cfg = {
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
        "model_max_length": max_seq_length,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), "utf-8")
    if with_tokenizer_json:
        from transformers import BertTokenizerFast

        # from_pretrained reads vocab.txt on transformers 4 and 5 alike; the constructor's
        # vocab_file= is ignored on 5 (every character becomes [UNK])
        BertTokenizerFast.from_pretrained(folder).backend_tokenizer.save(str(folder / "tokenizer.json"))
    if sentence_transformers_files:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        (folder / "modules.json").write_text(json.dumps(modules, indent=2), "utf-8")
        (folder / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}), "utf-8"
        )
        (folder / "1_Pooling").mkdir(exist_ok=True)
        pool = {
            "word_embedding_dimension": cfg["hidden_size"],
            "pooling_mode_cls_token": pooling == Pooling.CLS,
            "pooling_mode_mean_tokens": pooling == Pooling.MEAN,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_lasttoken": pooling == Pooling.LAST,
        }
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2), "utf-8")
    return folder


#: a tiny MPNet (all-mpnet-base-v2's architecture: relative-position attention bias, RoBERTa-style
#: position ids, padding id 1), mean pooling + Normalize as all-mpnet-base-v2
MPNET_TINY: dict[str, Any] = {
    "architectures": ["MPNetModel"],
    "model_type": "mpnet",
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "hidden_act": "gelu",
    "max_position_embeddings": 514,
    "relative_attention_num_buckets": 32,
    "layer_norm_eps": 1e-5,
    "initializer_range": 0.1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "vocab_size": 8000,
}
_MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]"]


def build_mpnet(folder: str | Path, *, seed: int = 0, max_seq_length: int = 384) -> Path:
    """Write a random-weight MPNet sentence-transformers folder (vocab.txt only, as the export must
    convert it) into ``folder`` and return it. Every bias, LayerNorm and the relative-position
    table are random too (a fresh MPNet has them at 0/1, which would hide a wrong bias path)."""
    import torch
    from transformers import MPNetConfig, MPNetModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = dict(MPNET_TINY)
    torch.manual_seed(seed)
    model = MPNetModel(MPNetConfig(**cfg), add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.2)
            if "relative_attention_bias" in name:
                p.normal_(0.0, 1.0)
    model.save_pretrained(folder, safe_serialization=True)
    words = [w for w in synthetic_vocab(cfg["vocab_size"]) if w not in _SPECIALS]
    vocab = (_MPNET_SPECIALS + words)[: cfg["vocab_size"] - 1] + ["<mask>"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", "utf-8")
    tok_cfg = {
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "MPNetTokenizer",
        "model_max_length": 512,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "[UNK]",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), "utf-8")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2), "utf-8")
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}), "utf-8"
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pool = {"word_embedding_dimension": cfg["hidden_size"], "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2), "utf-8")
    (folder / "2_Normalize").mkdir(exist_ok=True)
    return folder


# -- cross-encoders (rerankers) ---------------------------------------------------------------------

#: label names of the tiny 3-label cross-encoder (an NLI-shaped head)
NLI_LABELS = {0: "contradiction", 1: "entailment", 2: "neutral"}


def _classifier_folder(folder: Path, model: Any, tokenizer_files: Path, num_labels: int) -> Path:
    """Save ``model`` with a random head, then copy the tokenizer files of ``tokenizer_files``."""
    import shutil

    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            # random biases in the head too: a zero bias would hide a head whose bias is dropped
            if name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(folder, safe_serialization=True)
    for f in ("vocab.txt", "tokenizer_config.json", MARKER):
        if (tokenizer_files / f).is_file():
            shutil.copy(tokenizer_files / f, folder / f)
    return folder


def build_bert_cross_encoder(
    folder: str | Path, *, num_labels: int = 1, seed: int = 0, max_length: int = 128
) -> Path:
    """A random-weight tiny BERT cross-encoder (``BertForSequenceClassification``, two token
    types: the document is segment 1) in transformers' layout, with only vocab.txt."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = Path(folder)
    base = build_model(
        folder.parent / f"{folder.name}-base", "tiny", seed=seed, sentence_transformers_files=False
    )
    tok_cfg = json.loads((base / "tokenizer_config.json").read_text("utf-8")) | {
        "model_max_length": max_length
    }
    (base / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), "utf-8")
    labels = NLI_LABELS if num_labels == 3 else {i: f"LABEL_{i}" for i in range(num_labels)}
    cfg = (
        DMETA_CONFIG
        | SHAPES["tiny"]
        | {
            "architectures": ["BertForSequenceClassification"],
            "id2label": labels,
            "label2id": {v: k for k, v in labels.items()},
        }
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**cfg)).eval()
    return _classifier_folder(folder, model, base, num_labels)


def build_mpnet_cross_encoder(folder: str | Path, *, seed: int = 0) -> Path:
    """A random-weight tiny MPNet cross-encoder (``MPNetForSequenceClassification``: no token
    types, RoBERTa-style ``classifier.dense``/``out_proj`` head) in transformers' layout."""
    import torch
    from transformers import MPNetConfig, MPNetForSequenceClassification

    folder = Path(folder)
    base = build_mpnet(folder.parent / f"{folder.name}-base", seed=seed, max_seq_length=128)
    cfg = MPNET_TINY | {"architectures": ["MPNetForSequenceClassification"], "num_labels": 1}
    torch.manual_seed(seed)
    model = MPNetForSequenceClassification(MPNetConfig(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_attention_bias" in name:
                p.normal_(0.0, 1.0)
    folder = _classifier_folder(folder, model, base, 1)
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text("utf-8")) | {"model_max_length": 128}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), "utf-8")
    return folder


def save_cross_encoder(src: str | Path, folder: str | Path, activation_fn: Any = None) -> Path:
    """``src`` saved by sentence-transformers' ``CrossEncoder`` (its own layout, with the
    activation in ``config_sentence_transformers.json``), ``activation_fn`` set when given."""
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(src), activation_fn=activation_fn, device="cpu")
    ce.save(str(folder))
    return Path(folder)
