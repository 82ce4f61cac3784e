# For users with a container engine: one static (musl) binary on a
# distroless base, running as non-root. CI builds the image without a daemon
# (scripts/build-image.sh, scripts/image/Containerfile); both give the same
# layout (entrypoint, user, CA bundle path), which tests/image.rs checks.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin outbound-webhooks \
 && strip --strip-debug target/x86_64-unknown-linux-musl/release/outbound-webhooks

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/outbound-webhooks /usr/local/bin/outbound-webhooks
# The system roots the dispatcher verifies https:// receivers with (it
# refuses to start without any).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/outbound-webhooks"]
