# A stand-in for the official rust:<version>-slim-bookworm image (same paths and variables),
# made from the locally imported debian:bookworm-slim and a copy of the host's toolchain.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The host's own extra CAs (e.g. a TLS-inspecting egress proxy on the way to crates.io).
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain /usr/local/rustup/toolchain
RUN mkdir -p /usr/local/cargo/bin \
    && ln -s /usr/local/rustup/toolchain/bin/rustc /usr/local/rustup/toolchain/bin/cargo \
       /usr/local/rustup/toolchain/bin/rustdoc /usr/local/cargo/bin/
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
