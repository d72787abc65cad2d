# syntax=docker/dockerfile:1
#
# The rotor agent image: a static-ish Rust binary on distroless (glibc + CA certificates,
# no shell, no package manager), running as the distroless "nonroot" user (65532).
#
#   docker build -t rotor:0.1.0 .
#
# BuildKit (the default builder) caches the cargo registry and target directory
# between builds. Nothing from the build machine but the sources below enters the image.

FROM rust:1-bookworm AS build
WORKDIR /src
# Only what `cargo build` needs (see .dockerignore): the workspace manifests, the lock
# file, the sources, and the testkit member the workspace names.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY testkit ./testkit
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin rotor \
    && install -D -m 0755 target/release/rotor /out/rotor

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="rotor" \
      org.opencontainers.image.description="Rotates non-human credentials through Vault to their consumers and proves the old secret is rejected." \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/rotor /usr/local/bin/rotor
# distroless' nonroot user; the Helm chart sets the same ids and a read-only root.
USER 65532:65532
# API, /metrics, /healthz, /readyz (rotor run --listen 0.0.0.0:9464).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/rotor"]
CMD ["--help"]
