"""``dmeta-embed verify``: each variant of an exported folder against the source model, on the
user's own texts.

The export measures every variant on its probe set; a user's traffic can hold what no probe set
looks at (separators, emoji-only lines, table cells, boilerplate). This embeds the user's texts
with each variant through the runtime (as ``Embedder.encode`` does, with the folder's default
prompt) and with the source model the manifest names through transformers + torch fp32, and
reports each variant's cosine tail against its own fidelity bar. Needs the export extra (torch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require_feature
from ..errors import DmetaEmbedError, InputError, ModelLoadError
from ..manifest import Fidelity, Manifest
from .reference import cosines

log = logging.getLogger(__name__)

#: texts named per variant as its worst
WORST = 5


@dataclass(frozen=True)
class VariantCheck:
    """One variant on the user's texts: its cosines to the source model, against its bar."""

    variant: str
    #: per text, in input order; empty when the variant could not run here
    cos: np.ndarray
    bar_min_cos: float
    bar_mean_cos: float
    #: why the variant was not run here ("" when it ran)
    skipped: str = ""
    #: what the load plan warned about (e.g. bf16 computed in f32 on a CPU without native bf16)
    note: str = ""

    @property
    def min_cos(self) -> float:
        return float(self.cos.min())

    @property
    def p1_cos(self) -> float:
        """The 1st percentile (numpy's linear interpolation): the tail without its very end."""
        return float(np.percentile(self.cos, 1))

    @property
    def mean_cos(self) -> float:
        return float(self.cos.mean())

    @property
    def meets(self) -> bool | None:
        """Whether the variant meets its bar on these texts (None: not run here)."""
        if self.skipped:
            return None
        return self.min_cos >= self.bar_min_cos and self.mean_cos >= self.bar_mean_cos

    def worst(self, texts: list[str], k: int = WORST) -> list[dict[str, Any]]:
        order = np.argsort(self.cos, kind="stable")[:k]
        return [{"index": int(i), "cos": float(self.cos[i]), "text": texts[i]} for i in order]

    def to_dict(self, texts: list[str]) -> dict[str, Any]:
        bar = {"min_cos": self.bar_min_cos, "mean_cos": self.bar_mean_cos}
        if self.skipped:
            return {"skipped": self.skipped, "bar": bar, "meets": None}
        out = {
            "min_cos": self.min_cos,
            "p1_cos": self.p1_cos,
            "mean_cos": self.mean_cos,
            "bar": bar,
            "meets": self.meets,
            "worst": self.worst(texts),
        }
        return out | ({"note": self.note} if self.note else {})


def read_texts(path: str | Path) -> list[str]:
    """One text per line (UTF-8; ``-`` reads standard input); blank lines are skipped."""
    import sys

    try:
        raw = sys.stdin.read() if str(path) == "-" else Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the texts ({e})", field="texts") from e
    texts = [line for line in raw.splitlines() if line.strip()]
    if not texts:
        raise InputError(f"{path}: no texts (one per line)", field="texts")
    return texts


def reference(manifest: Manifest, texts: list[str], trust_remote_code: bool = False) -> np.ndarray:
    """The source model's vectors (transformers + torch fp32, the manifest's pooling,
    normalisation and max length): the source the manifest names, a local folder or a hub id at
    its recorded revision."""
    from .reference import torch_embeddings
    from .source import resolve

    model = manifest.source.get("model")
    if not model:
        raise ModelLoadError("the manifest names no source model to verify against")
    try:
        src = resolve(
            str(model), revision=manifest.source.get("revision"), trust_remote_code=trust_remote_code
        )
    except DmetaEmbedError as e:
        raise ModelLoadError(f"the source model {model!r} cannot be loaded here: {e}") from e
    return torch_embeddings(
        src.path,
        texts,
        manifest.pooling,
        manifest.normalize,
        manifest.max_length,
        trust_remote_code=trust_remote_code,
    )


def verify(
    folder: str | Path,
    texts: list[str],
    variants: list[str] | None = None,
    *,
    trust_remote_code: bool = False,
    ref: np.ndarray | None = None,
) -> list[VariantCheck]:
    """Each of ``variants`` (default: every variant in the folder) on ``texts`` against the source
    model (``ref``: its vectors, when already computed). A variant that cannot run here (its
    engine is missing, say) is reported as skipped, with why. Only the reference needs the
    export extra (torch): with ``ref`` given, the runtime alone runs."""
    if ref is None:
        require_feature("export")
    from ..runtime.embedder import Embedder

    manifest = Manifest.load(folder)
    if manifest.rerank is not None:
        raise ModelLoadError(
            f"{folder} is a rerank folder: verify checks embedding folders (texts, not pairs)"
        )
    names = list(variants) if variants else list(manifest.variants)
    unknown = [n for n in names if n not in manifest.variants]
    if unknown:
        raise InputError(
            f"variant(s) {', '.join(unknown)} not in this folder (it has: {', '.join(manifest.variants)})",
            field="variants",
        )
    prompt = manifest.prompts.get(manifest.default_prompt_name or "", "")
    fed = [prompt + t for t in texts]
    ref = reference(manifest, fed, trust_remote_code) if ref is None else ref
    out = []
    for name in names:
        fid = manifest.variants[name].fidelity
        assert isinstance(fid, Fidelity)  # an embed folder's (checked above)
        try:
            emb = Embedder.load(folder, variant=name)
        except DmetaEmbedError as e:
            out.append(VariantCheck(name, np.empty(0), fid.bar_min_cos, fid.bar_mean_cos, skipped=str(e)))
            continue
        got = emb.encode(fed, prompt="")
        note = "; ".join(emb.plan.warnings)
        out.append(VariantCheck(name, cosines(got, ref), fid.bar_min_cos, fid.bar_mean_cos, note=note))
    return out


def report(checks: list[VariantCheck], texts: list[str]) -> dict[str, Any]:
    """What ``verify --json`` prints."""
    return {"texts": len(texts), "variants": {c.variant: c.to_dict(texts) for c in checks}}


def render(checks: list[VariantCheck], texts: list[str]) -> str:
    """The table ``verify`` prints: each variant's tail against its bar, then its worst texts."""
    lines = [
        f"{len(texts)} texts",
        "",
        f"{'variant':8} {'min cos':>9} {'p1 cos':>9} {'mean cos':>9}  {'bar (min/mean)':>15}  meets",
    ]
    for c in checks:
        bar = f"{c.bar_min_cos}/{c.bar_mean_cos}"
        if c.skipped:
            lines.append(f"{c.variant:8} {'-':>9} {'-':>9} {'-':>9}  {bar:>15}  skipped: {c.skipped}")
            continue
        meets = "yes" if c.meets else "NO"
        lines.append(f"{c.variant:8} {c.min_cos:9.6f} {c.p1_cos:9.6f} {c.mean_cos:9.6f}  {bar:>15}  {meets}")
        if c.note:
            lines.append(f"{'':8} note: {c.note}")
    for c in checks:
        if c.skipped:
            continue
        lines += ["", f"{c.variant}: worst texts"]
        for w in c.worst(texts):
            text = w["text"] if len(w["text"]) <= 70 else w["text"][:67] + "..."
            lines.append(f"  {w['cos']:.6f}  [{w['index']}] {text!r}")
    return "\n".join(lines)
