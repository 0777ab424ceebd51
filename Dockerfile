# qbo-pipeline: build the binary with the Rust toolchain, run it on a slim Debian.
#
#   docker build -t qbo-pipeline .
#   docker run --rm --env-file .env qbo-pipeline            # the scheduler (default command)
#   docker run --rm --env-file .env qbo-pipeline run qb_items_backfill \
#       --var fecha_inicio=2014-01-01 --var fecha_fin=2025-12-31
#
# Configuration comes from the environment only (see .env.example); nothing secret is baked
# into the image.

ARG RUST_VERSION=1.94
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# Manifests first, then the sources: the registry cache survives source-only changes.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p qbo-pipeline --bin qbo-pipeline \
    && install -m 0755 target/release/qbo-pipeline /usr/local/bin/qbo-pipeline

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to Intuit's API and token endpoint (rustls reads the system roots).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --create-home qbo
COPY --from=builder /usr/local/bin/qbo-pipeline /usr/local/bin/qbo-pipeline
USER qbo
WORKDIR /app
# Exec form: the binary is PID 1 and receives SIGTERM from `docker stop` directly; it finishes
# the page in flight, commits its checkpoint and exits 0 (give it time: stop_grace_period).
ENTRYPOINT ["qbo-pipeline"]
CMD ["scheduler", "--no-progress"]
