"""A drop-in for the Dartboard system's ``SentenceTransformerModel``.

The seed's code switches to dartboard by changing one import::

    from dartboard.compat import SentenceTransformerModel

    model = SentenceTransformerModel("all-MiniLM-L6-v2", device="cpu")
    vector = model.encode("one text")          # shape (dim,)
    matrix = model.encode(["a", "b"])          # shape (2, dim)
    model.embedding_dim                        # 384
"""

from typing import List, Optional, Union

import numpy as np

from dartboard._dartboard import Embedder


class SentenceTransformerModel:
    """``encode(texts, batch_size=32)``: 1-D for one string, 2-D for a list;
    ``embedding_dim``. ``model_name=None`` (and ``device=None``) take the
    configured value (``EMBEDDING_MODEL``, ``dartboard.toml``), whose default is
    all-MiniLM-L6-v2 on the CPU."""

    def __init__(self, model_name: Optional[str] = None, device: Optional[str] = None):
        self._embedder = Embedder(model=model_name, device=device)
        self.model_name = self._embedder.model
        self.device = self._embedder.device
        self.embedding_dim = self._embedder.embedding_dim

    def encode(self, texts: Union[str, List[str]], batch_size: int = 32) -> np.ndarray:
        if isinstance(texts, str):
            return self._embedder.encode([texts], batch_size=batch_size)[0]
        return self._embedder.encode(list(texts), batch_size=batch_size)

    def __repr__(self) -> str:
        return f"SentenceTransformerModel({self.model_name!r}, device={self.device!r})"
