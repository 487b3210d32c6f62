"""Quoted evidence (`quote: true` on a search): the sentence of a hit's chunk that best supports the query.

Lexical on purpose: a sentence scores the summed weights of the distinct query words it contains, a word weighing
less the more sentences of the chunk contain it (idf within the chunk), so the quote is where the query's rarer
words meet. It costs no model call, and the quote is the chunk's own text at the given offsets.
"""

import math
import re

# A sentence ends at . ! ? followed by whitespace, or at a blank line (headings, list items).
SENTENCE = re.compile(r"\S(?:.*?)(?:[.!?](?=\s)|(?=\n\s*\n)|$)", re.DOTALL)
WORD = re.compile(r"\w+")
STOP_WORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it of on or the this to what when where which who why "
    "with you your".split()
)


def words(text: str) -> set[str]:
    return {word for word in WORD.findall(text.lower()) if word not in STOP_WORDS}


def best_quote(text: str, query: str) -> tuple[int, int] | None:
    """(start, end) of the best sentence in `text`, or None when no sentence shares a word with the query."""
    sentences = [(m.start(), m.end(), words(m.group())) for m in SENTENCE.finditer(text)]
    wanted = words(query)
    if not sentences or not wanted:
        return None
    weight = {
        word: math.log(1 + len(sentences) / sum(word in found for _, _, found in sentences))
        for word in wanted
        if any(word in found for _, _, found in sentences)
    }
    if not weight:
        return None
    start, end, _ = max(sentences, key=lambda s: sum(weight.get(word, 0.0) for word in s[2] & wanted))
    return start, end
