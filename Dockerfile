# messenger-handover: a multi-stage build into a small image with nothing but the binary.
#
#   docker build -t messenger-handover .
#   docker run -p 8080:8080 -v handover-data:/data --env-file deploy/compose.env messenger-handover
#
# The final image is FROM scratch: the binary, the C libraries it links (glibc's libc, libm,
# the loader, libgcc_s; `ldd` lists them), the CA certificates, and /etc/passwd, /etc/group,
# /etc/nsswitch.conf for a user 10001. No shell, no package manager. It runs as uid/gid 10001,
# keeps the SQLite store in the volume /data and listens on 8080. For several replicas, point
# DATABASE_URL at PostgreSQL (see compose.yaml and deploy/).

########## build ##########
FROM rust:1.95-bookworm AS builder
WORKDIR /build

# The whole workspace, then one build with cache mounts for the registry and target/: a
# rebuild after a source edit recompiles only what changed, and there is no hand-made
# "dependencies only" layer whose placeholder files must track every target the manifests
# declare (that layer broke the image once when a bench was added).
# `sqlx::migrate!` embeds crates/service/migrations at compile time, so they are in the
# context; .dockerignore keeps target/, .git and local settings files out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked -p messenger-handover --bin messenger-handover \
 && cp target/release/messenger-handover /usr/local/bin/messenger-handover

# The root of the final image, assembled here (the scratch stage has no shell to do it).
# The libraries are whatever `ldd` says the binary needs, copied with their paths (the
# loader's path is written into the binary). nsswitch.conf: host names from /etc/hosts, then
# DNS (glibc 2.36 has both built in). /tmp for SQLite's temporary files.
RUN set -eu; \
    root=/rootfs; \
    mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" /data-dir; \
    cp /usr/local/bin/messenger-handover "$root/usr/local/bin/"; \
    for lib in $(ldd /usr/local/bin/messenger-handover | grep -o '/[^ ]*'); do \
      cp --parents -L "$lib" "$root"; \
    done; \
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"; \
    echo 'handover:x:10001:10001:messenger-handover:/data:/sbin/nologin' > "$root/etc/passwd"; \
    echo 'handover:x:10001:' > "$root/etc/group"; \
    echo 'hosts: files dns' > "$root/etc/nsswitch.conf"; \
    chmod 1777 "$root/tmp"; \
    "$root/usr/local/bin/messenger-handover" --version

########## runtime ##########
FROM scratch

COPY --from=builder /rootfs/ /
# The store's directory, created by this COPY and so owned by the service's user (before
# VOLUME, so fresh named volumes keep that ownership).
COPY --from=builder --chown=10001:10001 /data-dir /data

ENV PATH=/usr/local/bin \
    DATABASE_URL=sqlite:///data/handover.db \
    HOST=0.0.0.0 \
    PORT=8080

WORKDIR /data
VOLUME /data
EXPOSE 8080
USER 10001:10001
# Orchestrators send SIGTERM; the service then stops within SHUTDOWN_GRACE_SECS (default 8).
STOPSIGNAL SIGTERM

# GETs http://127.0.0.1:$PORT/healthz and exits 0/1 (no shell or curl in the image). Podman
# keeps HEALTHCHECK only with `podman build --format docker`; Docker always keeps it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/messenger-handover", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/messenger-handover"]
CMD ["serve"]
