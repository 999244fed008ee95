"""dartboard: sentence-transformers embeddings computed in Rust on libtorch.

``Embedder`` and ``CrossEncoder`` are configured like the ``dartboard`` CLI (arguments,
then ``EMBEDDING_*`` variables, then ``dartboard.toml``) and read models from the same
cache as the CLI and Python sentence-transformers. ``dartboard.compat`` has a drop-in
for the Dartboard system's ``SentenceTransformerModel``; ``dartboard.ray`` embeds a
Ray Dataset across a cluster.

The extension links the libtorch inside the ``torch`` wheel this package depends on
and finds it beside itself (``site-packages/torch/lib``), so neither
``LD_LIBRARY_PATH`` nor an earlier ``import torch`` is needed.
"""

from dartboard._dartboard import (
    LIBTORCH_VERSION,
    CrossEncoder,
    DartboardError,
    Embedder,
    __version__,
)

__all__ = ["CrossEncoder", "DartboardError", "Embedder", "LIBTORCH_VERSION", "__version__"]
