"""The STS Benchmark as the fixture scripts read it (tab-separated, no quoting)."""

import csv


def sts_sentences(path, limit):
    """The first `limit` distinct sentences of an STS-B split, both columns in row order."""
    sentences = []
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            for s in (row[5], row[6]):
                if s not in sentences:
                    sentences.append(s)
            if len(sentences) >= limit:
                return sentences[:limit]
    return sentences
