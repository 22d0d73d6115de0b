# syntax=docker/dockerfile:1
#
# eros-mcp container image.
#
#   docker build -t eros-mcp:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9090:9090 -v eros-data:/data \
#     -e EROS_MCP_AUTH_TOKEN="$(openssl rand -hex 32)" eros-mcp:0.1.0
#
# The image carries the litestream binary (the same release as the sidecar and
# follower images in deploy/kubernetes/) so that `eros-mcp restore` can run
# it: a fresh primary restores its replica before serving (docs/replication.md,
# "Backups and read replicas").
#
# The image defaults to the MCP HTTP transport on 0.0.0.0:8080 (/mcp) with the
# metrics sidecar on 0.0.0.0:9090, so EROS_MCP_AUTH_TOKEN is required: eros-mcp
# refuses a non-loopback address without a bearer token. The database lives
# in the /data volume.

# ---------------------------------------------------------------- build
FROM rust:1-slim-bookworm AS build
WORKDIR /src

# rusqlite's bundled SQLite is compiled with the image's gcc; no other native
# dependencies (Cargo.lock has no openssl/rustls). If Cargo.toml gains a
# build.rs or other files read at compile time, COPY them here too
# (tests/operations/ops_assets.rs checks that cargo can load what is copied).
COPY Cargo.toml Cargo.lock ./
# SQLite's compile-time options (LIBSQLITE3_FLAGS), read by cargo at build time.
COPY .cargo ./.cargo
COPY src ./src
# The workspace's other member (eros-bench): Cargo reads every member's
# manifest even to build the server alone, which is all this builds.
COPY bench ./bench
# Embedded into the binary at compile time (include_dir / from-directory).
COPY migrations ./migrations
# Declared in Cargo.toml ([[bench]]): cargo refuses the manifest without it.
COPY benches ./benches

# Cache mounts keep the registry and target/ between builds; the binary is
# copied out in the same step because a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin eros-mcp \
 && install -D -m 0755 target/release/eros-mcp /out/eros-mcp

# The data directory, owned by the runtime user (distroless has no shell to
# create it there).
RUN install -d -m 0750 -o 10001 -g 10001 /out/data

# ---------------------------------------------------------------- runtime
# glibc + libgcc, CA certificates and tzdata; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/eros-mcp /usr/local/bin/eros-mcp
# A static Go binary: it runs on distroless as it is. EROS_DB_LITESTREAM_BIN
# (default `litestream`, found on PATH) names it.
COPY --from=litestream/litestream:0.5.17 /usr/local/bin/litestream /usr/local/bin/litestream
COPY --from=build --chown=10001:10001 /out/data /data

ENV EROS_MCP_TRANSPORT=http \
    EROS_MCP_HTTP_ADDR=0.0.0.0:8080 \
    EROS_METRICS_ADDR=0.0.0.0:9090 \
    EROS_DB_PATH=/data/eros_sd_main.db \
    EROS_LOG_FORMAT=json

# A fixed numeric uid/gid (not distroless' own 65532 "nonroot"), matching
# runAsUser/fsGroup in deploy/kubernetes/deployment.yaml.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

# 8080: MCP streamable HTTP (/mcp). 9090: /metrics, /livez, /readyz, /stats.
EXPOSE 8080 9090

# No HEALTHCHECK: the image has no curl/wget; orchestrators probe /livez and
# /readyz on port 9090 directly (see deploy/kubernetes/deployment.yaml).
# SIGTERM triggers the graceful shutdown (readyz 503, drain, WAL checkpoint).
STOPSIGNAL SIGTERM
ENTRYPOINT ["eros-mcp"]
CMD ["serve"]
