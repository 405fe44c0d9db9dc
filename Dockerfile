# messenger-handover: multi-stage release build.
#
#   docker build -t messenger-handover .
#   docker run -p 8080:8080 -v handover-data:/data --env-file handover.env messenger-handover
#
# The image runs as uid/gid 10001 and keeps the SQLite store in the volume /data.
# For several replicas, point DATABASE_URL at PostgreSQL (see compose.yaml).

########## build ##########
FROM rust:1.95-bookworm AS builder
WORKDIR /build

# 1. Dependencies only: the manifests plus an empty lib, main and bench. This layer is
#    rebuilt only when Cargo.toml or Cargo.lock change, not on every source edit. Every
#    target Cargo.toml declares must exist, or cargo refuses the manifest: the bench stays a
#    placeholder (the image never builds it).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > benches/latency.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin messenger-handover \
 && rm -rf src

# 2. The crate itself. `sqlx::migrate!` embeds migrations/sqlite and migrations/postgres
#    at compile time, so they must be here. (fixtures/ is only used by tests.)
COPY migrations ./migrations
COPY src ./src
# COPY keeps the files' original mtimes, which can be older than the dummy build above;
# drop the dummy crate's artifacts so cargo always recompiles the real one.
RUN rm -rf target/release/deps/messenger_handover-* \
           target/release/deps/libmessenger_handover-* \
           target/release/.fingerprint/messenger-handover-* \
 && touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin messenger-handover \
 && cp target/release/messenger-handover /usr/local/bin/messenger-handover

########## runtime ##########
FROM debian:bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid, so volume ownership and Kubernetes' runAsNonRoot work.
RUN groupadd --gid 10001 handover \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data \
            --shell /usr/sbin/nologin handover \
 && mkdir -p /data \
 && chown 10001:10001 /data

COPY --from=builder /usr/local/bin/messenger-handover /usr/local/bin/messenger-handover

# The SQLite file lives in /data (owned by the user above, created before VOLUME so
# the ownership is kept in fresh named volumes).
WORKDIR /data
VOLUME /data

ENV DATABASE_URL=sqlite:///data/handover.db \
    HOST=0.0.0.0 \
    PORT=8080

EXPOSE 8080
USER 10001:10001

# GETs http://127.0.0.1:$PORT/healthz and exits 0/1. (Podman keeps HEALTHCHECK only
# with `podman build --format docker`; Docker always keeps it.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["messenger-handover", "healthcheck"]

ENTRYPOINT ["messenger-handover"]
CMD ["serve"]
