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
    # extremes on such texts), then members of every family the runtime does not route to fp32
    # (PROBE_SEED's; the suite and benchmarks/tails.py check others, HELD_OUT_SEED's)
    texts += ["", " \t\n ", "😀🎉🚀👍🔥", "好 " * (max_length + 8)]
    return texts + [t for _, t in degenerate_texts(PROBE_PER_FAMILY, PROBE_SEED, max_length, guarded=False)]


def calibration_texts(n: int = 48, seed: int = 7) -> list[str]:
    """Prose and a few degenerate texts (a seed disjoint from the probe set's): what the export's
    int8 searches calibrate on and int8 output quantization takes its ranges from."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(_paragraph(rng, 1 + (i % 5)) if i % 3 else rng.choice(EN + MIXED + ZH))
    # degenerate texts of the same kinds as the probe set's, but not the same texts
    out += ["  ", "✨🌟💡", "test " * 300]
    return out


def search_texts(max_length: int = 512) -> list[str]:
    """What the export's int8 searches calibrate on: :func:`calibration_texts` and a member of
    every family the runtime does not route to fp32 (CALIBRATION_SEED's, none of the probe set's)
    but prose at max length, which the calibration texts already reach (``"test " * 300``) and
    whose activation statistics would cost the export memory it does not have to spend."""
    members = degenerate_texts(SEARCH_PER_FAMILY, CALIBRATION_SEED, max_length, guarded=False)
    return calibration_texts() + [t for f, t in members if f not in SEARCH_SKIPS]


# -- (query, document) pairs for cross-encoders ----------------------------------------------------


def probe_pairs(max_length: int) -> tuple[list[tuple[str, str]], list[int]]:
    """The pairs every exported reranker variant is validated on, and each pair's query index:
    every query against every document, so each query's documents can be ranked. Documents include
    near-duplicates of a query and unrelated ones, an empty one, emoji only, one word repeated
    past max length and prose past max length; one query is itself long, so pair truncation
    (``longest_first``) cuts both sides."""
    rng = random.Random(4321)
    over = ""
    while len(over) < 2 * max_length + 50:
        over += _paragraph(rng, 10)
    queries = [ZH[0], ZH[1], EN[1], MIXED[0], EN[3], _paragraph(rng, 20)]
    documents = [
        ZH[2],
        ZH[4],
        ZH[9],
        EN[0],
        EN[2],
        MIXED[2],
        _paragraph(rng, 3),
        _paragraph(rng, 6),
        over,
        "",
        "😀🎉🚀👍🔥",
        "好 " * (max_length + 8),
        _punct_mixed(rng, max_length),
    ]
    pairs = [(q, d) for q in queries for d in documents]
    return pairs, [i for i in range(len(queries)) for _ in documents]


def calibration_pairs(n: int = 48, seed: int = 7) -> list[tuple[str, str]]:
    """Pairs the int8 searches of a reranker calibrate on (a seed disjoint from the probe pairs'):
    a short query beside prose, related or not, and a few degenerate documents."""
    rng = random.Random(seed)
    texts = calibration_texts(n, seed)
    out = [(rng.choice(ZH + EN + MIXED), t) for t in texts]
    return out + [("", rng.choice(ZH)), (rng.choice(EN), "")]


# -- degenerate input, by family ---------------------------------------------------------------------
# What users send besides prose: separators, emoji-only chat lines, table cells, code, URLs,
# boilerplate. int8's activation ranges meet their extremes on such texts, and a probe set of
# prose never looks there. Each family makes as many members as asked from a seed: the test suite
# and benchmarks/tails.py check held-out members of every family.

_CJK_PUNCT = "，。！？；：、“”‘’《》【】（）…—·～「」『』〈〉"
_ASCII_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_SYMBOLS = "©®™°±×÷§¶†‡•‰′″€£¥₩¢∞≈≠≤≥∑∏√∫∂∆∇←→↑↓↔⇒⇔♠♣♥♦★☆○●◎◇◆□■△▲▽▼※"
_EMOJI = "😀😂🥲😍🤔😭😡👍👎👏🙏💪🔥✨🎉🚀💡❤️💔⭐🌟☀️🌧️🍜🍺⚽🎵📱💻📈🧧🐼"
_ZWJ = ["👨‍👩‍👧‍👦", "👩‍💻", "🧑‍🚀", "🏳️‍🌈", "👨‍🍳", "🧑‍🤝‍🧑", "❤️‍🔥", "🐻‍❄️", "👩🏽‍🔬", "🏃‍♀️"]
_WORDS = ["the", "word", "好", "的", "test", "数据", "ok", "是", "a", "模型"]
_SCRIPTS = [
    "Привет мир",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "こんにちは世界",
    "안녕하세요 세계",
    "สวัสดีชาวโลก",
    "Γειά σου Κόσμε",
    "Xin chào thế giới",
    "你好世界",
    "hello world",
]
_CODE = [
    "def f(x):\n    return x ** 2 + 1",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    '{"key": [1, 2, 3], "ok": true, "name": null}',
    '<div class="row"><span>价格</span></div>',
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)",
    "$ pip install 'dmeta-embed[cpu]' && dmeta-embed serve --model out/m",
    'fn main() { println!("{}", 1 + 2); }',
]


def _pick(rng: random.Random, alphabet: str | list[str], lo: int, hi: int, sep: str = "") -> str:
    return sep.join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _punct_cjk(rng: random.Random, max_length: int) -> str:
    return _pick(rng, _CJK_PUNCT, 1, 40, rng.choice(["", "", " "]))


def _punct_ascii(rng: random.Random, max_length: int) -> str:
    return _pick(rng, _ASCII_PUNCT, 1, 40, rng.choice(["", "", " "]))


def _punct_mixed(rng: random.Random, max_length: int) -> str:
    return _pick(rng, _CJK_PUNCT + _ASCII_PUNCT, 2, 40, rng.choice(["", " "]))


def _symbols(rng: random.Random, max_length: int) -> str:
    return _pick(rng, _SYMBOLS, 1, 30, rng.choice(["", " "]))


def _emoji(rng: random.Random, max_length: int) -> str:
    return _pick(rng, list(_EMOJI.replace("\ufe0f", "")), 1, 20, rng.choice(["", " "]))


def _emoji_zwj(rng: random.Random, max_length: int) -> str:
    return _pick(rng, _ZWJ, 1, 8, rng.choice(["", " "]))


def _digits(rng: random.Random, max_length: int) -> str:
    forms = [
        lambda: str(rng.randint(0, 10 ** rng.randint(1, 12))),
        lambda: f"{rng.uniform(-1e4, 1e4):.{rng.randint(1, 6)}f}",
        lambda: f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        lambda: f"+86 1{rng.randint(30, 99)}{rng.randint(0, 99999999):08d}",
        lambda: (
            f"{rng.randint(1, 999)},{rng.randint(0, 999):03d},{rng.randint(0, 999):03d}.{rng.randint(0, 99):02d}"
        ),
        lambda: f"{rng.random() * 100:.1f}%",
    ]
    return " ".join(rng.choice(forms)() for _ in range(rng.randint(1, 6)))


def _single_char(rng: random.Random, max_length: int) -> str:
    return rng.choice(list("a我Z。1?好é€😀 ") + [rng.choice(_CJK_PUNCT), rng.choice(_SYMBOLS)])


def _repeated_tokens(rng: random.Random, max_length: int) -> str:
    word = rng.choice(_WORDS)
    return (word + rng.choice([" ", "", ", "])) * rng.randint(2, max_length + 16)


def _repeated_chars(rng: random.Random, max_length: int) -> str:
    return rng.choice("哈啊好!.-=*a😂") * rng.randint(2, 3 * max_length)


def _whitespace_control(rng: random.Random, max_length: int) -> str:
    blank = _pick(rng, [" ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u200b", "\x00", "\x1b", "\x7f"], 1, 30)
    return blank if rng.random() < 0.5 else blank + rng.choice(ZH + EN) + blank


def _mixed_scripts(rng: random.Random, max_length: int) -> str:
    return _pick(rng, _SCRIPTS, 2, 6, rng.choice([" ", "，", " / "]))


def _code(rng: random.Random, max_length: int) -> str:
    return "\n".join(rng.sample(_CODE, rng.randint(1, 3)))


def _url(rng: random.Random, max_length: int) -> str:
    host = rng.choice(["example.com", "www.例子.中国", "api.example.org:8443", "192.168.0.1", "t.cn"])
    path = "/".join(
        rng.choice(["a", "search", "商品", "v1", "id", "%E4%BD%A0%E5%A5%BD"])
        for _ in range(rng.randint(0, 4))
    )
    query = "&".join(f"{rng.choice('qkxyz')}={rng.randint(0, 9999)}" for _ in range(rng.randint(0, 3)))
    url = f"{rng.choice(['https', 'http'])}://{host}/{path}" + (f"?{query}" if query else "")
    return url if rng.random() < 0.6 else f"{rng.choice(ZH)} {url} {rng.choice(['👍', '', '谢谢'])}"


def _at_max_length(rng: random.Random, max_length: int) -> str:
    # prose cut right at the model's limit (and past it): the long end of every batch
    out = ""
    while len(out) < rng.randint(max_length, 2 * max_length):
        out += rng.choice(ZH + EN + MIXED)
    return out


#: family name → a function (rng, max_length) → one member
FAMILIES = {
    "punct_cjk": _punct_cjk,
    "punct_ascii": _punct_ascii,
    "punct_mixed": _punct_mixed,
    "symbols": _symbols,
    "emoji": _emoji,
    "emoji_zwj": _emoji_zwj,
    "digits": _digits,
    "single_char": _single_char,
    "repeated_tokens": _repeated_tokens,
    "repeated_chars": _repeated_chars,
    "whitespace_control": _whitespace_control,
    "mixed_scripts": _mixed_scripts,
    "code": _code,
    "url": _url,
    "max_length": _at_max_length,
}
#: the seeds of the members the export sees: the int8 searches calibrate on one, validation probes
#: the other; the suite and benchmarks/tails.py check members of a third (held out)
CALIBRATION_SEED = 11
PROBE_SEED = 23
HELD_OUT_SEED = 97
#: members of each family the probe set validates on, and the searches calibrate on (few: the long
#: families' members run at max length, and every search trial embeds them all)
PROBE_PER_FAMILY = 2
SEARCH_PER_FAMILY = 1
#: families the searches do not calibrate on (see :func:`search_texts`)
SEARCH_SKIPS = frozenset({"max_length"})


#: families made of one token over and over: the runtime routes them to the fp32 graph
#: (``runtime.guard``)
GUARDED = frozenset({"repeated_tokens", "repeated_chars"})


def degenerate_texts(
    per_family: int, seed: int, max_length: int = 512, *, guarded: bool = True
) -> list[tuple[str, str]]:
    """``per_family`` members of every family in :data:`FAMILIES` (``guarded=False``: but those in
    :data:`GUARDED`), as ``(family, text)``; the same seed gives the same members (each family
    draws from its own generator)."""
    out = []
    for i, (family, make) in enumerate(FAMILIES.items()):
        if not guarded and family in GUARDED:
            continue
        rng = random.Random(seed * 1000 + i)
        out += [(family, make(rng, max_length)) for _ in range(per_family)]
    return out
