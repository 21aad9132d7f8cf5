"""One small adapter per system (see ``benchmarks.systems`` for the interface and the catalogue).

Peers run at their documented defaults, with two harness-wide choices: ``threads`` (all usable
CPUs) and ``batch_size`` (32, sentence-transformers' default) wherever the user picks one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .systems import Adapter, Context, Unavailable, qint8_config

# --- helpers shared by the hand-written peer loops ------------------------------------------------


def longest_first(texts: list[str]) -> list[int]:
    """Indices of ``texts`` by character length, longest first (ties keep input order)."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


def length_sorted_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar length, longest first (what sentence-transformers does)."""
    order = longest_first(texts)
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def pool_np(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """CLS / mean / last-token pooling of ``(B, L, H)`` with a right-padded ``(B, L)`` mask."""
    if pooling == "cls":
        v = hidden[:, 0]
    elif pooling == "mean":
        m = mask[..., None].astype(hidden.dtype)
        v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    else:
        v = hidden[np.arange(hidden.shape[0]), mask.sum(1) - 1]
    v = v.astype(np.float32)
    if normalize:
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v


# --- ours ------------------------------------------------------------------------------------------


class Ours(Adapter):
    """dmeta-embed's runtime on one variant of the exported folder."""

    def load(self) -> None:
        from dmeta_embed.runtime import Embedder

        variant = self.options["variant"]
        self.model = Embedder.load(
            self.ctx.export_dir,
            variant=variant,
            provider="openvino" if variant in ("int8-ov", "bf16") else "cpu",
            threads=self.ctx.threads,
        )
        self.info = {
            "batching": f"token budget {self.model.max_batch_tokens}, batch ≤ {self.model.batch_size}"
        }

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts)


# --- transformers + torch --------------------------------------------------------------------------


class TorchHF(Adapter):
    """``AutoModel`` + ``AutoTokenizer`` in a length-sorted loop; ``dtype=bf16`` casts the weights
    once (``model.to(torch.bfloat16)``): on CPUs with AMX, oneDNN then runs bf16 matmuls."""

    def load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        torch.set_num_threads(self.ctx.threads)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(self.ctx.source_dir, use_fast=True)
        model = AutoModel.from_pretrained(self.ctx.source_dir).eval()
        if self.options.get("dtype") == "bf16":
            model = model.to(torch.bfloat16)
        self.model = model
        self.info = {
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "torch_threads": torch.get_num_threads(),
        }

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        out = np.empty((len(texts), self.ctx.dim), dtype=np.float32)
        with torch.inference_mode():
            for idx in length_sorted_batches(texts, self.ctx.batch_size):
                enc = self.tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.ctx.max_length,
                    return_tensors="pt",
                )
                h = self.model(**enc).last_hidden_state.float().numpy()
                out[idx] = pool_np(h, enc["attention_mask"].numpy(), self.ctx.pooling, self.ctx.normalize)
        return out


# --- sentence-transformers (torch, onnx, openvino backends) -----------------------------------------

ST_ONNX_DIR, ST_OV_DIR = "st-onnx", "st-openvino"
ST_ONNX_FILES = {"O3": "onnx/model_O3.onnx", "qint8": "onnx/model_qint8_{config}.onnx"}
ST_OV_QINT8 = "openvino/openvino_model_qint8_quantized.xml"
#: what loading an HF folder with backend=onnx/openvino exports (and save_pretrained keeps)
ST_BASE_FILES = {"onnx": "onnx/model.onnx", "openvino": "openvino/openvino_model.xml"}


class SentenceTransformers(Adapter):
    """``SentenceTransformer(...).encode``. Options: ``backend`` torch|onnx|openvino and ``export``
    (onnx: O3 | qint8 — sentence-transformers' own export helpers; openvino: qint8 — static
    int8 with NNCF through optimum-intel's ``OVQuantizer``, as sentence-transformers'
    ``export_static_quantized_openvino_model`` does, but calibrated on local texts because that
    helper downloads GLUE/SST-2 from the hub)."""

    def _folder(self) -> Path:
        backend = self.options.get("backend", "torch")
        if backend == "torch":
            return self.ctx.source_dir
        return self.ctx.cache_dir / (ST_ONNX_DIR if backend == "onnx" else ST_OV_DIR)

    def _file(self) -> str | None:
        export = self.options.get("export")
        if export is None:
            return None
        if self.options.get("backend") != "onnx":
            return ST_OV_QINT8
        name = ST_ONNX_FILES[export].format(config=qint8_config())
        if export == "qint8":
            # the file is named after the preset's weight type: qint8 on most presets, quint8 on
            # avx2 (model_quint8_avx2.onnx); take whichever the export wrote
            found = sorted((self._folder() / "onnx").glob(f"model_*int8_{qint8_config()}.onnx"))
            if found:
                return str(found[0].relative_to(self._folder()))
        return name

    @classmethod
    def is_prepared(cls, ctx: Context, **options: Any) -> bool:
        a = cls(ctx, **options)
        backend = options.get("backend", "torch")
        if backend == "torch":
            return True
        base = ST_BASE_FILES[backend]
        return all((a._folder() / f).is_file() for f in (base, a._file() or base))

    def _st(self, folder: Path, **kw: Any):  # type: ignore[no-untyped-def]
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        return SentenceTransformer(str(folder), device="cpu", **kw)

    def prepare(self) -> dict[str, Any]:
        backend, export = self.options.get("backend", "torch"), self.options.get("export")
        if backend == "torch":
            return {}
        folder = self._folder()
        done: dict[str, Any] = {}
        if not (folder / ST_BASE_FILES[backend]).is_file():
            self._st(self.ctx.source_dir, backend=backend).save_pretrained(str(folder))
            done["exported"] = backend
        if export is None or (folder / self._file()).is_file():  # type: ignore[operator]
            return done
        model = self._st(folder, backend=backend)
        if backend == "onnx" and export == "O3":
            from sentence_transformers import export_optimized_onnx_model

            export_optimized_onnx_model(model, "O3", str(folder))
        elif backend == "onnx" and export == "qint8":
            from sentence_transformers import export_dynamic_quantized_onnx_model

            export_dynamic_quantized_onnx_model(model, qint8_config(), str(folder))
        elif backend == "openvino" and export == "qint8":
            _openvino_static_int8(model, folder)
        else:
            raise Unavailable(f"unknown export {export!r} for backend {backend!r}")
        done["export"] = export
        return done

    def load(self) -> None:
        import torch

        torch.set_num_threads(self.ctx.threads)
        backend = self.options.get("backend", "torch")
        kw: dict[str, Any] = {}
        if backend != "torch":
            kw["backend"] = backend
            if self._file():
                kw["model_kwargs"] = {"file_name": self._file()}
        self.model = self._st(self._folder(), **kw)
        self.info = {"file": self._file() or "default", "max_seq_length": self.model.max_seq_length}
        if backend == "openvino":
            self.info.update(_openvino_properties(self.model))
        if self.model.max_seq_length != self.ctx.max_length:
            self.info["warning"] = (
                f"max_seq_length {self.model.max_seq_length} != export {self.ctx.max_length}"
            )

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=self.ctx.batch_size,
            convert_to_numpy=True,  # type: ignore[no-any-return]
            show_progress_bar=False,
        ).astype(np.float32, copy=False)


def _openvino_properties(model: Any) -> dict[str, str]:
    """What the compiled OpenVINO model really runs: on CPUs with AMX/AVX512-BF16 the CPU plugin's
    default inference precision is bf16, even for an fp32 IR."""
    out = {}
    compiled = getattr(getattr(model, "transformers_model", None), "request", None)
    for prop in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS"):
        try:
            out[prop] = str(compiled.get_property(prop))  # type: ignore[union-attr]
        except Exception:  # older OpenVINO, or not a CompiledModel: leave it out
            pass
    return out


def _openvino_static_int8(model: Any, folder: Path, n_samples: int = 300) -> None:
    """NNCF static int8 (``OVQuantizationConfig``: transformer model type, SmoothQuant) calibrated
    on ``n_samples`` built-in texts, saved where sentence-transformers' helper saves it."""
    import tempfile

    import nncf
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer

    from dmeta_embed.texts import calibration_texts

    tok = model.tokenizer
    data = [
        dict(tok(t, truncation=True, max_length=model.max_seq_length, return_tensors="np"))
        for t in calibration_texts(n_samples)
    ]
    quantizer = OVQuantizer.from_pretrained(model.transformers_model)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        quantizer.quantize(
            calibration_dataset=nncf.Dataset(data),
            save_directory=tmp,
            ov_config=OVConfig(quantization_config=OVQuantizationConfig(num_samples=n_samples)),
        )
        src = Path(tmp) / "openvino" / "openvino_model.xml"
        if not src.is_file():
            src = next(Path(tmp).rglob("*.xml"))
        dst = folder / ST_OV_QINT8
        shutil.copy(src, dst)
        shutil.copy(src.with_suffix(".bin"), dst.with_suffix(".bin"))


# --- optimum ----------------------------------------------------------------------------------------


class OptimumORT(Adapter):
    """optimum's ``ORTModelForFeatureExtraction`` (its own ONNX export, ONNX Runtime CPU) in a
    length-sorted loop, pooled in numpy like the model's 1_Pooling says."""

    FOLDER = "optimum-ort"

    @classmethod
    def is_prepared(cls, ctx: Context, **options: Any) -> bool:
        return (ctx.cache_dir / cls.FOLDER / "model.onnx").is_file()

    def prepare(self) -> dict[str, Any]:
        from optimum.onnxruntime import ORTModelForFeatureExtraction
        from transformers import AutoTokenizer

        folder = self.ctx.cache_dir / self.FOLDER
        ORTModelForFeatureExtraction.from_pretrained(self.ctx.source_dir, export=True).save_pretrained(folder)
        AutoTokenizer.from_pretrained(self.ctx.source_dir, use_fast=True).save_pretrained(folder)
        return {"exported": str(folder)}

    def load(self) -> None:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForFeatureExtraction
        from transformers import AutoTokenizer

        folder = self.ctx.cache_dir / self.FOLDER
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.ctx.threads
        self.model = ORTModelForFeatureExtraction.from_pretrained(folder, session_options=so)
        self.tok = AutoTokenizer.from_pretrained(folder, use_fast=True)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.ctx.dim), dtype=np.float32)
        for idx in length_sorted_batches(texts, self.ctx.batch_size):
            enc = self.tok(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.ctx.max_length,
                return_tensors="np",
            )
            h = self.model(**enc).last_hidden_state
            h = h.numpy() if hasattr(h, "numpy") else np.asarray(h)
            out[idx] = pool_np(h, enc["attention_mask"], self.ctx.pooling, self.ctx.normalize)
        return out


# --- fastembed ---------------------------------------------------------------------------------------


class FastEmbed(Adapter):
    """fastembed's ``TextEmbedding`` on *our* exported ONNX file (pooling and normalisation are in
    the graph, so it runs with ``PoolingType.DISABLED``), registered with ``add_custom_model`` and
    loaded from a local folder (``specific_model_path``): the model files and the graph are the
    same as ours, so the difference is the wrapper (tokenisation, batching, session options).
    fastembed does not sort by length; the harness hands it texts sorted by length (and restores
    the order) so batches are not padded to the longest text of a mixed workload."""

    FOLDER = "fastembed"

    @property
    def variant(self) -> str:
        return str(self.options.get("variant", "fp32"))

    def _folder(self) -> Path:
        return self.ctx.cache_dir / f"{self.FOLDER}-{self.variant}"

    @classmethod
    def is_prepared(cls, ctx: Context, **options: Any) -> bool:
        return (cls(ctx, **options)._folder() / "model.onnx").exists()

    def prepare(self) -> dict[str, Any]:
        from dmeta_embed.manifest import Manifest

        folder = self._folder()
        folder.mkdir(parents=True, exist_ok=True)
        manifest = Manifest.load(self.ctx.export_dir)
        for name, src in (
            ("model.onnx", self.ctx.export_dir / manifest.variants[self.variant].file),
            ("tokenizer.json", self.ctx.export_dir / manifest.tokenizer.file),
        ):
            link = folder / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(src.resolve())
        for name in ("config.json", "special_tokens_map.json"):
            if (self.ctx.source_dir / name).is_file():
                shutil.copy(self.ctx.source_dir / name, folder / name)
        # fastembed truncates at tokenizer_config's model_max_length: use the export's max length
        cfg_file = self.ctx.source_dir / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text("utf-8")) if cfg_file.is_file() else {}
        cfg.update({"model_max_length": self.ctx.max_length, "pad_token": cfg.get("pad_token", "[PAD]")})
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2), "utf-8")
        return {"folder": str(folder)}

    def load(self) -> None:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        name = f"local/dmeta-embed-{self.variant}"
        try:
            TextEmbedding.add_custom_model(
                model=name,
                pooling=PoolingType.DISABLED,
                normalization=False,
                sources=ModelSource(hf=name),
                dim=self.ctx.dim,
                model_file="model.onnx",
            )
            self.model = TextEmbedding(
                name,
                specific_model_path=str(self._folder()),
                threads=self.ctx.threads,
                providers=["CPUExecutionProvider"],
                local_files_only=True,
            )
        except Exception as e:
            raise Unavailable(f"fastembed could not load the local model: {type(e).__name__}: {e}") from e
        self.info = {"presorted_by_harness": True}

    def encode(self, texts: list[str]) -> np.ndarray:
        order = longest_first(texts)
        emb = np.stack(list(self.model.embed([texts[i] for i in order], batch_size=self.ctx.batch_size)))
        out = np.empty_like(emb, dtype=np.float32)
        out[order] = emb
        return out
