# sekoia-forwarder container image: a drop-in for the rsyslog-based Sekoia.io Forwarder image
# (same mounts, same environment; see docs/migration.md). Multi-stage: the toolchain stays in
# the build stage, the runtime image is Debian slim with two binaries and ca-certificates.
#
#   docker build -t sekoia-forwarder .
#
# Uses only the classic builder's features (no BuildKit), so it builds with any Docker or Podman.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# 1. Dependencies only, from the manifests and Cargo.lock, over placeholder sources: this
#    layer (the slow part) is reused until a manifest or the lock file changes.
COPY Cargo.toml Cargo.lock ./
COPY shared/Cargo.toml shared/
COPY bins/sekoia-forwarder/Cargo.toml bins/sekoia-forwarder/
COPY bins/sekoia-ctl/Cargo.toml bins/sekoia-ctl/
COPY tests/Cargo.toml tests/
COPY bench/Cargo.toml bench/
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
RUN for lib in shared tests bench; do mkdir -p $lib/src && : > $lib/src/lib.rs; done \
    && for bin in sekoia-forwarder sekoia-ctl; do \
         mkdir -p bins/$bin/src && echo 'fn main() {}' > bins/$bin/src/main.rs; done \
    && cargo build --release --locked -p sekoia-forwarder -p sekoia-ctl \
    && rm -rf shared/src bins/*/src
# 2. Our sources (touched: COPY keeps their older modification times, which cargo would
#    take for "already built" after the placeholder build).
COPY shared/src shared/src
COPY bins bins
RUN find shared/src bins -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p sekoia-forwarder -p sekoia-ctl \
    && install -d /out \
    && install -m 0755 target/release/sekoia-forwarder target/release/sekoia-ctl /out/

FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: the uplink trusts the system roots (Sekoia's intake certificates).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && groupadd --system --gid 10514 sekoia-forwarder \
    && useradd --system --uid 10514 --gid 10514 --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin sekoia-forwarder \
    && install -d -m 0700 -o 10514 -g 10514 /var/spool/rsyslog \
    && install -d -m 0750 -o 10514 -g 10514 /run/sekoia-forwarder /var/log/sekoia-forwarder
COPY --from=build /out/sekoia-forwarder /out/sekoia-ctl /usr/bin/
COPY packaging/docker/entrypoint.sh /usr/lib/sekoia-forwarder/entrypoint.sh
COPY config/intakes.yaml /usr/share/doc/sekoia-forwarder/examples/intakes.yaml
# The reference image's paths and variables (docs/migration.md); every other setting keeps
# its default (docs/configuration.md).
ENV SEKOIA_CONFIG=/intakes.yaml \
    SPOOL_DIR=/var/spool/rsyslog \
    CERTS_DIR=/certs \
    MEMORY_MESSAGES=100000 \
    DISK_SPACE=32g \
    REGION=FRA1
# The entrypoint starts as root only to hand the mounted spool folder and TLS keys to the
# sekoia-forwarder user, then runs the forwarder as that user (never as root).
ENTRYPOINT ["/usr/lib/sekoia-forwarder/entrypoint.sh"]
CMD ["sekoia-forwarder"]
# The supervisor answers on its control socket while its loop runs: 0 OK, 1 unreachable.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["sekoia-ctl", "status"]
# Stops in order (inputs, uplink flush, rings saved to the spool): give it the grace period
# docs/operations.md derives from MEMORY_MESSAGES (compose: stop_grace_period).
STOPSIGNAL SIGTERM
