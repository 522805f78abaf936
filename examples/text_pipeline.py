"""A CPU-bound text pipeline on a real library: fuzzy product search with rapidfuzz.

Each operation takes a search query (one record of ``data/queries.jsonl``),
normalises it, scores it against a product catalogue with
``rapidfuzz.process.extract`` (weighted ratio, in C), and drops near-duplicate
hits by Levenshtein similarity. A query that matches nothing well enough
raises ``LookupError`` — a failure, classified by type in the report.

The catalogue is built once per worker by the factory (``target_factory =
true`` in ``text_pipeline.toml``), as a real service would load its index at
start-up, not per request::

    pip install 'loadgen[examples]'
    python -m loadgen run --config examples/text_pipeline.toml
"""

from __future__ import annotations

import random

from rapidfuzz import fuzz, process, utils
from rapidfuzz.distance import Levenshtein

BRANDS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Wonka", "Cyberdyne"]
ADJECTIVES = ["wireless", "ergonomic", "stainless", "compact", "portable", "waterproof", "silent", "smart",
              "foldable", "heavy-duty", "organic", "vintage"]
PRODUCTS = ["keyboard", "mouse", "kettle", "blender", "headphones", "backpack", "desk lamp", "coffee grinder",
            "water bottle", "standing desk", "monitor arm", "toaster", "speaker", "office chair", "notebook"]
COLOURS = ["black", "white", "red", "blue", "green", "graphite", "silver", "walnut"]


def build_catalogue(size, seed=0):
    """``size`` distinct product titles, the same for a given seed."""
    rng = random.Random(seed)
    titles = set()
    while len(titles) < size:
        titles.add(f"{rng.choice(BRANDS)} {rng.choice(ADJECTIVES)} {rng.choice(PRODUCTS)} "
                   f"{rng.choice(COLOURS)} {rng.randint(100, 999)}")
    return sorted(titles)


class Search:
    """Per-worker search over a catalogue; ``search(record)`` is one operation."""

    def __init__(self, catalogue, limit=5, cutoff=60.0, dedupe_similarity=0.9):
        self.titles = catalogue
        self.processed = [utils.default_process(t) for t in catalogue]  # normalised once, not per query
        self.limit = limit
        self.cutoff = cutoff
        self.dedupe_similarity = dedupe_similarity

    def search(self, record):
        query = utils.default_process(str(record["query"]))
        hits = process.extract(query, self.processed, scorer=fuzz.WRatio, processor=None,
                               limit=self.limit * 3, score_cutoff=self.cutoff)
        kept = []
        for text, score, index in hits:
            if any(Levenshtein.normalized_similarity(text, self.processed[k]) >= self.dedupe_similarity
                   for _, _, k in kept):
                continue
            kept.append((text, score, index))
            if len(kept) == self.limit:
                break
        if not kept:
            raise LookupError(f"no product matches {record['query']!r} at {self.cutoff:g} or better")
        return [{"title": self.titles[i], "score": round(s, 1)} for _, s, i in kept]


def make_search(catalogue_size=3000, limit=5, cutoff=60.0, seed=0):
    """The factory: called once per worker with the plan's ``target_args``; returns the operation."""
    return Search(build_catalogue(catalogue_size, seed), limit=limit, cutoff=cutoff).search
