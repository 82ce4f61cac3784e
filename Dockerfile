# One static binary on a distroless base, running as non-root.
# (Not built in CI: the CI machines have no container engine.)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin outbound-webhooks

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/outbound-webhooks /usr/local/bin/outbound-webhooks
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/outbound-webhooks"]
