# syntax=docker/dockerfile:1
# Build: docker build -t mailbus .
# A static binary (CGO off) on a distroless-like scratch base: CA certificates, a non-root
# user, nothing else. deploy/deploy_test.go builds the binary with exactly these flags and
# checks it is static, since CI has no container engine.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags="-s -w -buildid= -X main.version=${VERSION}" \
      -o /out/mailbus ./cmd/mailbus \
 && mkdir -p /out/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/mailbus /mailbus
# The working directory holds the embedded server's store (MAILBUS_DATA_DIR=./mailbus-data)
# when no MAILBUS_NATS_URL is given; it must belong to the non-root user.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
# 65532 is the conventional "nonroot" uid of distroless images.
USER 65532:65532
ENV MAILBUS_SUBJECT_PREFIX=mail \
    MAILBUS_STREAM_REPLICAS=1 \
    MAILBUS_DEDUP_WINDOW=10m \
    MAILBUS_MAX_INLINE_BYTES=262144 \
    MAILBUS_HTTP_ADDR=:8080 \
    MAILBUS_EMBEDDED_LISTEN=127.0.0.1:4222 \
    MAILBUS_DATA_DIR=./mailbus-data \
    MAILBUS_LOG_LEVEL=info \
    MAILBUS_LOG_FORMAT=json
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/mailbus", "healthcheck"]
ENTRYPOINT ["/mailbus"]
CMD ["serve"]
