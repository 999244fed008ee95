"""The Dartboard RAG system's demo picks, from sentence-transformers' embeddings.

Run by `cargo xtask test` through the project's venv:
    python seed_demo.py MODEL_DIR DEMO_JSON OUT_JSON

DEMO_JSON is `crates/dartboard-cli/src/demo.json` (the system's eight documents,
query and parameters). This follows the system's `demo_dartboard.py` and the scoring
of its `dartboard/core.py`, written out from their description: each text is encoded
on its own, as the system does; candidates are triaged by cosine similarity; with
d = 1 - cos, log P(t|q) = -d(q,t)^2 / (2 sigma^2) and log N(t|g) = -d(t,g)^2 / (2
sigma^2), unnormalised; the first pick is the candidate nearest the query, and each
later pick c maximises logsumexp_t(log P(t|q) + max(max_g log N(t|g), log N(t|c))).
The score printed for a pick is the query's cosine distance to it, to 4 decimals.
`dartboard demo` must print the same picks in the same order with the same scores.
"""

import json
import sys

import numpy as np
from scipy.special import logsumexp
from sentence_transformers import SentenceTransformer


def unit(v):
    n = np.linalg.norm(v)
    return v / n if n else v


def main(model_dir, demo_path, out_path):
    with open(demo_path, encoding="utf-8") as f:
        demo = json.load(f)
    model = SentenceTransformer(model_dir, device="cpu")
    docs = [model.encode(text) for text in demo["documents"]]
    query = model.encode(demo["query"])

    sims = np.array([float(np.dot(unit(d), unit(query))) for d in docs])
    # Triage: the triage_k most similar, most similar first.
    order = list(np.argsort(-sims, kind="stable")[: demo["triage_k"]])
    cand = [unit(docs[i]) for i in order]
    k = len(order)
    two_sigma_sq = 2.0 * demo["sigma"] ** 2
    q_dist = np.array([1.0 - sims[i] for i in order])
    log_p = -(q_dist**2) / two_sigma_sq
    log_n = np.array([[-((1.0 - float(np.dot(cand[t], cand[g]))) ** 2) / two_sigma_sq for g in range(k)] for t in range(k)])

    selected = [int(np.argmax(log_p))]
    while len(selected) < min(demo["top_k"], k):
        best, best_score = None, -np.inf
        for c in range(k):
            if c in selected:
                continue
            terms = [log_p[t] + max(max(log_n[t, g] for g in selected), log_n[t, c]) for t in range(k)]
            score = logsumexp(terms)
            if score > best_score:
                best, best_score = c, score
        selected.append(best)

    picks = [
        {
            "index": int(order[c]),
            "text": demo["documents"][order[c]],
            "distance": float(q_dist[c]),
            "score": f"{q_dist[c]:.4f}",
        }
        for c in selected
    ]
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"query": demo["query"], "picks": picks}, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
