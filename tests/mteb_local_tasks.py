"""Two small mteb tasks built in memory (no hub): a retrieval and an STS task in English, sized so
the real MiniLM scores them in seconds and fp32 vs int8 differences are visible."""

from __future__ import annotations

from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

_META: dict[str, Any] = {
    "description": "A local task for testing the dmeta-embed mteb adapter.",
    "reference": "https://github.com/embeddings-benchmark/mteb",
    "dataset": {"path": "NA", "revision": "NA"},
    "category": "t2t",
    "eval_splits": ["test"],
    "eval_langs": ["eng-Latn"],
    "date": ("2024-01-01", "2024-01-01"),
    "dialect": ["Written"],
    "domains": [],
    "task_subtypes": [],
    "license": "cc-by-4.0",
    "annotations_creators": "derived",
    "modalities": ["text"],
    "sample_creation": "found",
    "bibtex_citation": "",
}

#: (query, its relevant document); every other document is a distractor
PAIRS = [
    (
        "how do plants make their food",
        "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar.",
    ),
    ("what is the capital of France", "Paris is the capital and the largest city of France."),
    ("why is the sky blue", "Sunlight scatters off air molecules, and blue light scatters the most."),
    ("how many legs does a spider have", "Spiders are arachnids with eight legs and two body segments."),
    ("who wrote Romeo and Juliet", "Romeo and Juliet is a tragedy written by William Shakespeare."),
    ("what is the boiling point of water", "At sea level water boils at 100 degrees Celsius."),
    (
        "how do vaccines work",
        "Vaccines train the immune system to recognise a pathogen without causing disease.",
    ),
    ("what is the largest planet", "Jupiter is the largest planet in the solar system."),
    ("how to brew green tea", "Steep green tea leaves in water at about 80 degrees for two minutes."),
    ("what causes earthquakes", "Earthquakes happen when tectonic plates suddenly slip along a fault."),
    ("when did humans land on the moon", "Apollo 11 landed the first humans on the Moon in July 1969."),
    ("what do pandas eat", "Giant pandas feed almost entirely on bamboo shoots and leaves."),
]
DISTRACTORS = [
    "The stock market closed higher after the central bank's announcement.",
    "A good pair of running shoes should fit snugly around the heel.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Electric cars are charged from the grid or from home solar panels.",
    "The library extended its opening hours during the exam period.",
    "Chess openings are studied for centuries by strong players.",
]

#: (sentence1, sentence2, similarity 0..5)
STS = [
    ("A man is playing a guitar.", "A man plays the guitar.", 5.0),
    ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.6),
    ("A dog runs across the field.", "A dog is running through the grass.", 4.2),
    ("Two children are playing in the snow.", "Kids play outside in the snow.", 4.0),
    ("A man is driving a car.", "A man is riding a bicycle.", 2.0),
    ("The cat sleeps on the sofa.", "A cat is lying on the couch.", 4.0),
    ("A chef is cooking pasta.", "Someone is preparing food in a kitchen.", 3.0),
    ("The stock price fell sharply today.", "Markets dropped at the close.", 2.8),
    ("A plane is taking off.", "A bird is flying over the lake.", 1.0),
    ("A man is playing the piano.", "The weather is sunny and warm.", 0.0),
    ("She is reading a book in the park.", "A woman reads outdoors.", 3.8),
    ("The train arrived late.", "A boy is eating an apple.", 0.2),
    ("A group of people are dancing.", "People are dancing together at a party.", 4.1),
    ("The baby is crying.", "An infant is in tears.", 4.5),
    ("A man is fixing a roof.", "A woman is painting a picture.", 0.8),
    ("Rain is falling on the city.", "It is raining in town.", 4.7),
]


class LocalRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(type="Retrieval", name="DmetaLocalRetrieval", main_score="ndcg_at_10", **_META)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        docs = [d for _, d in PAIRS] + DISTRACTORS
        self.dataset = {
            "default": {
                "test": RetrievalSplitData(
                    queries=Dataset.from_list([{"id": f"q{i}", "text": q} for i, (q, _) in enumerate(PAIRS)]),
                    corpus=Dataset.from_list(
                        [{"id": f"d{i}", "text": d, "title": ""} for i, d in enumerate(docs)]
                    ),
                    relevant_docs={f"q{i}": {f"d{i}": 1} for i in range(len(PAIRS))},
                    top_ranked=None,
                )
            }
        }
        self.data_loaded = True


class LocalSTS(AbsTaskSTS):
    metadata = TaskMetadata(type="STS", name="DmetaLocalSTS", main_score="cosine_spearman", **_META)
    min_score = 0
    max_score = 5

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        s1, s2, score = zip(*STS, strict=True)
        self.dataset = DatasetDict(
            {"test": Dataset.from_dict({"sentence1": list(s1), "sentence2": list(s2), "score": list(score)})}
        )
        self.data_loaded = True
