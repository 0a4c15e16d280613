"""Candidate keyphrases of a text: word n-grams without stopwords at their edges."""

from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9+\-]*[A-Za-z0-9+]|[A-Za-z]{2,}")
STOPWORDS = frozenset(
    [
        "a", "about", "above", "after", "again", "against", "all", "also", "am", "an",
        "and", "any", "are", "as", "at", "be", "because", "been", "before", "being",
        "below", "between", "both", "but", "by", "can", "could", "did", "do", "does",
        "doing", "down", "during", "each", "either", "else", "every", "few", "for", "from",
        "further", "get", "gets", "got", "had", "has", "have", "having", "he", "her",
        "here", "hers", "him", "his", "how", "however", "i", "if", "in", "into", "is", "it",
        "its", "itself", "just", "let", "like", "made", "make", "many", "may", "me",
        "might", "more", "most", "much", "must", "my", "no", "nor", "not", "now", "of",
        "off", "on", "once", "one", "only", "or", "other", "our", "out", "over", "own",
        "per", "same", "see", "she", "should", "since", "so", "some", "such", "than",
        "that", "the", "their", "them", "then", "there", "these", "they", "this", "those",
        "through", "thus", "to", "too", "two", "under", "until", "up", "upon", "us", "use",
        "used", "uses", "using", "very", "via", "was", "we", "were", "what", "when",
        "where", "whether", "which", "while", "who", "whom", "why", "will", "with",
        "within", "without", "would", "yet", "you", "your", "new", "first", "last", "next",
        "way", "ways", "based", "e.g", "i.e", "etc", "one", "two", "three", "true", "false",
        "null", "none", "yes",
    ]
)


def candidate_phrases(text: str, *, max_words: int = 2, limit: int = 24) -> list[str]:
    """The ``limit`` most frequent n-grams (1..max_words words), longer ones first on ties.

    A phrase holds no stopword, and single words need 4+ letters.
    """
    words = [w.lower() for w in _TOKEN.findall(text)]
    counts: Counter[str] = Counter()
    for n in range(1, max_words + 1):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if any(word in STOPWORDS for word in gram):
                continue
            if n == 1 and len(gram[0]) < 4:
                continue
            counts[" ".join(gram)] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], -item[0].count(" "), item[0]))
    return [phrase for phrase, _ in ranked[:limit]]
