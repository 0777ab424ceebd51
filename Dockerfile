# qbo-pipeline: build the binary with the Rust toolchain, run it on a slim Debian.
#
#   docker build -t qbo-pipeline .
#   docker run --rm --env-file .env -p 127.0.0.1:8080:8080 qbo-pipeline
#       # default command: `serve --listen 0.0.0.0:8080` (dashboard + /metrics + the
#       # scheduler in one process; QBO_WEB_TOKEN must be set in .env)
#   docker run --rm --env-file .env qbo-pipeline scheduler --no-progress   # scheduler only
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
# `serve` listens on every interface of the container, so it refuses to start without
# QBO_WEB_TOKEN; publish the port on the host's loopback (or behind a TLS reverse proxy).
EXPOSE 8080
ENTRYPOINT ["qbo-pipeline"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
