# lagbudget container image.
#
#   docker build -t lagbudget:0.1.0 --build-arg LAGBUDGET_REVISION="$(git rev-parse --short=12 HEAD)" .
#   docker run --rm -p 9464:9464 -v "$PWD/config.yaml:/etc/lagbudget/config.yaml:ro" \
#       -e ORDERS_DB_PASSWORD lagbudget:0.1.0
#
# The build context has no .git (see .dockerignore), so the git revision shown in
# lagbudget_build_info comes from the LAGBUDGET_REVISION build argument ("unknown" without it).

FROM rust:1-bookworm AS build
WORKDIR /src
ARG LAGBUDGET_REVISION=""
ENV LAGBUDGET_REVISION=${LAGBUDGET_REVISION}
COPY . .
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/lagbudget /out/lagbudget

FROM debian:bookworm-slim
# ca-certificates for the TLS connections later probes will make; curl for HEALTHCHECK.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lagbudget \
 && useradd --system --uid 10001 --gid lagbudget --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin lagbudget \
 && mkdir -p /etc/lagbudget
COPY --from=build /out/lagbudget /usr/local/bin/lagbudget
USER 10001:10001
EXPOSE 9464
# Assumes the default port; change it here too if the config's `listen` uses another one.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["lagbudget"]
CMD ["run", "-c", "/etc/lagbudget/config.yaml"]
