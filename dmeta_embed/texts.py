"""Built-in texts: the export probe set and the int8 calibration texts.

Standard library only. The benchmark's workloads are generated in the repository's
``benchmarks/workloads.py``.
"""

from __future__ import annotations

import random

# Sentences from the Dmeta-embedding model card, and everyday Chinese / English / mixed text.
ZH = [
    "胡子长得太快怎么办？",
    "在香港哪里买手表好",
    "胡子长得快怎么办？",
    "怎样使胡子不浓密！",
    "香港买手表哪里好",
    "在杭州手机到哪里买",
    "今天北京的天气怎么样？",
    "我想预订明天下午两点的会议室。",
    "这家餐厅的牛肉面非常好吃，价格也很实惠。",
    "人工智能正在改变医疗、教育和金融等多个行业。",
    "请问去火车站怎么走？",
    "深度学习模型需要大量的数据和算力进行训练。",
    "他在二〇二三年获得了博士学位，研究方向是自然语言处理。",
    "这款手机的电池续航时间长达两天。",
    "周末我们一起去爬山吧，天气预报说是晴天。",
    "上海的房价在过去十年里上涨了很多。",
]
EN = [
    "How do I stop my beard from growing so fast?",
    "Where is the best place to buy a watch in Hong Kong?",
    "The quick brown fox jumps over the lazy dog.",
    "Embedding models map text to vectors for semantic search.",
    "ONNX Runtime runs transformer models quickly on CPUs and GPUs.",
    "Please reset my password; I cannot log in since yesterday.",
]
MIXED = [
    "我用 Python 3.11 和 ONNX Runtime 部署了 BERT 模型。",
    "iPhone 15 Pro 的价格是 7999 元。",
    "今天☀️天气很好，我们去公园吧😊",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ：１２３，全角字符测试。",
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
    # degenerate inputs users send, held out of the calibration set: empty, whitespace only,
    # emoji only, and one word repeated past max length (int8's activation scales meet their
    # extremes on such texts)
    texts += ["", " \t\n ", "😀🎉🚀👍🔥", "好 " * (max_length + 8)]
    return texts


def calibration_texts(n: int = 48, seed: int = 7) -> list[str]:
    """Texts the int8 search measures sensitivity on (disjoint seed from the probe set)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(_paragraph(rng, 1 + (i % 5)) if i % 3 else rng.choice(EN + MIXED + ZH))
    # degenerate texts of the same kinds as the probe set's, but not the same texts
    out += ["  ", "✨🌟💡", "test " * 300]
    return out
