"""sentence-transformers' own truncation and quantization, for tests/tests/output_precision.rs.

Run by that test through the project's venv (`venv_python()` in tests/src/lib.rs):
    python quantize_reference.py REQUEST_JSON

REQUEST_JSON holds
    {"model": MODEL_DIR or null, "texts": [...],
     "encode": [{"truncate_dim": N or null, "precision": "int8"}, ...],
     "quantize": [{"embeddings": [[...]], "precision": "uint8", "calibration": [[...]] or null}, ...]}
and the answer, on stdout, is {"encode": [rows, ...], "quantize": [rows, ...]}: for each
"encode" item, SentenceTransformer(MODEL_DIR).encode(texts, truncate_dim=..., precision=...);
for each "quantize" item, quantize_embeddings(embeddings, precision,
calibration_embeddings=...) on exactly the f32 values given (JSON floats written from
f32 parse back to the same f32), so the Rust side can be compared bit for bit.
"""

import json
import sys

import numpy as np
from sentence_transformers.util.quantization import quantize_embeddings


def rows(array):
    # float32 values become Python floats exactly (f32 -> f64 is exact).
    return np.asarray(array).tolist()


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    answer = {"encode": [], "quantize": []}
    if request.get("encode"):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(request["model"], device="cpu")
        for item in request["encode"]:
            out = model.encode(
                request["texts"],
                truncate_dim=item.get("truncate_dim"),
                precision=item.get("precision", "float32"),
            )
            answer["encode"].append(rows(out))
    for item in request.get("quantize", []):
        embeddings = np.asarray(item["embeddings"], dtype=np.float32)
        calibration = item.get("calibration")
        if calibration is not None:
            calibration = np.asarray(calibration, dtype=np.float32)
        out = quantize_embeddings(embeddings, precision=item["precision"], calibration_embeddings=calibration)
        answer["quantize"].append(rows(out))
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
