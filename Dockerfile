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

# The whole workspace, then one build with cache mounts for the registry and target/: a
# rebuild after a source edit recompiles only what changed, and there is no hand-made
# "dependencies only" layer whose placeholder files must track every target the manifests
# declare (that layer broke the image once when a bench was added).
# `sqlx::migrate!` embeds crates/service/migrations at compile time, so they are in the
# context; .dockerignore keeps target/ and .git out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked -p messenger-handover --bin messenger-handover \
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
