"""Seeded Chinese benchmark workloads: ``query``, ``passage``, ``long`` and ``mixed`` texts.

Standard library only; the texts depend on the seed alone, so every run measures the same inputs.
"""

from __future__ import annotations

import random

_CJK_COMMON = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面"
    "而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性"
    "好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第"
    "向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管"
    "特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处"
)
_PUNCT = "，。、？！；：“”（）"


def workload_text(rng: random.Random, n_chars: int) -> str:
    """Chinese text of about ``n_chars`` characters (≈ tokens for BERT-zh): CJK, punctuation, digits, some Latin."""
    parts: list[str] = []
    size = 0
    while size < n_chars:
        r = rng.random()
        if r < 0.04:
            piece = str(rng.randint(1, 99999))
        elif r < 0.07:
            piece = rng.choice(["AI", "GPU", "iPhone", "Python", "ok", "APP", "5G", "CEO"])
        elif r < 0.17:
            piece = rng.choice(_PUNCT)
        else:
            piece = "".join(rng.choice(_CJK_COMMON) for _ in range(rng.randint(1, 4)))
        parts.append(piece)
        size += len(piece)
    return "".join(parts)[:n_chars]


WORKLOADS = {
    # name: (n texts, min chars, max chars); token counts are measured and reported separately
    "query": (512, 8, 30),
    "passage": (256, 100, 480),
    "long": (48, 1200, 1600),
}


def workload(name: str, n: int | None = None, seed: int = 0) -> list[str]:
    """Seeded Chinese workload texts: ``query`` 8–32 tokens, ``passage`` 100–500, ``long`` ≥ 1024,
    ``mixed`` = 70 % query, 25 % passage, 5 % long, shuffled."""
    rng = random.Random(f"{name}:{seed}")
    if name == "mixed":
        total = n or 512
        counts = {"query": int(total * 0.70), "long": max(1, int(total * 0.05))}
        counts["passage"] = total - counts["query"] - counts["long"]
        texts = [t for k, c in counts.items() for t in workload(k, c, seed)]
        rng.shuffle(texts)
        return texts
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from query, passage, long, mixed")
    default_n, lo, hi = WORKLOADS[name]
    return [workload_text(rng, rng.randint(lo, hi)) for _ in range(n or default_n)]
