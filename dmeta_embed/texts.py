"""Built-in texts: the export probe set, int8 calibration texts, and seeded benchmark workloads.

Standard library only (both export and benchmarks use it).
"""

from __future__ import annotations

import random

# Sentences from the Dmeta-embedding model card, and everyday Chinese / English / mixed text.
ZH = [
    "胡子长得太快怎么办？", "在香港哪里买手表好", "胡子长得快怎么办？", "怎样使胡子不浓密！",
    "香港买手表哪里好", "在杭州手机到哪里买", "今天北京的天气怎么样？", "我想预订明天下午两点的会议室。",
    "这家餐厅的牛肉面非常好吃，价格也很实惠。", "人工智能正在改变医疗、教育和金融等多个行业。",
    "请问去火车站怎么走？", "深度学习模型需要大量的数据和算力进行训练。",
    "他在二〇二三年获得了博士学位，研究方向是自然语言处理。", "这款手机的电池续航时间长达两天。",
    "周末我们一起去爬山吧，天气预报说是晴天。", "上海的房价在过去十年里上涨了很多。",
]
EN = [
    "How do I stop my beard from growing so fast?", "Where is the best place to buy a watch in Hong Kong?",
    "The quick brown fox jumps over the lazy dog.", "Embedding models map text to vectors for semantic search.",
    "ONNX Runtime runs transformer models quickly on CPUs and GPUs.",
    "Please reset my password; I cannot log in since yesterday.",
]
MIXED = [
    "我用 Python 3.11 和 ONNX Runtime 部署了 BERT 模型。", "iPhone 15 Pro 的价格是 7999 元。",
    "今天☀️天气很好，我们去公园吧😊", "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ：１２３，全角字符测试。",
    "GPU 显存不够的时候可以试试 int8 量化。",
]


def _paragraph(rng: random.Random, n_sentences: int) -> str:
    pool = ZH * 3 + EN + MIXED
    return "".join(rng.choice(pool) for _ in range(n_sentences))


def probe_texts(max_length: int) -> list[str]:
    """Texts every exported variant is validated on: short, long, zh, en, and one over max length."""
    rng = random.Random(1234)
    texts = ZH[:8] + EN[:4] + MIXED
    texts += [_paragraph(rng, 6), _paragraph(rng, 20)]
    # one text longer than max_length tokens: validates the truncation path at full length
    over = ""
    while len(over) < 2 * max_length + 50:
        over += _paragraph(rng, 10)
    texts.append(over)
    return texts


def calibration_texts(n: int = 48, seed: int = 7) -> list[str]:
    """Texts the int8 search measures sensitivity on (disjoint seed from the probe set)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(_paragraph(rng, 1 + (i % 5)) if i % 3 else rng.choice(EN + MIXED + ZH))
    return out


# --- benchmark workloads -------------------------------------------------------------------------

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
