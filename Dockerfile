# syntax=docker/dockerfile:1
# idaas-projector: one static, non-root image for every command (serve, webhook, controller, and
# the wait-for-token init container that the webhook injects into pods).
#
#   docker build -t idaas-projector:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Manifests first, so that the dependency download is cached until Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin idaas-projector \
 && install -D -m 0755 target/release/idaas-projector /out/idaas-projector

# distroless/cc: glibc, libgcc, CA certificates and /etc/passwd with the nonroot user (65532);
# no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="idaas-projector" \
      org.opencontainers.image.description="Projects fresh IDaaS M2M tokens into Kubernetes pods for Alibaba Cloud STS AssumeRoleWithOIDC" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/idaas-projector /idaas-projector
USER 65532:65532
ENTRYPOINT ["/idaas-projector"]
CMD ["--help"]
