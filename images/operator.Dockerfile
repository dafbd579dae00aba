# The operator/API image: the `sparkwing-operator` binary as a non-root (65532) process on a
# Debian bookworm base, read-only-root compatible. docs/operator.md#images.
#
#   docker build -f images/operator.Dockerfile -t sparkwing-operator:0.1.0 .
#
# Build arguments:
#   BASE        the Debian bookworm image to run on (default: the public bookworm-slim)
#   RUST_IMAGE  the Rust image that compiles the binary (default: the public 1.95 slim bookworm)
#   BINARIES    `source`: compile a release from the source in the context (the default);
#               `prebuilt`: take bin/sparkwing-operator from the context (a directory holding only
#               that: images/build.sh stages host-built binaries so; no compiler runs)
ARG BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS binaries
ARG BINARIES=source
WORKDIR /src
COPY . .
RUN set -eu; mkdir -p /out/bin; \
    case "$BINARIES" in \
    source) \
        cargo build --release --locked -p sparkwing-operator --bin sparkwing-operator; \
        cp target/release/sparkwing-operator /out/bin/; \
        rm -rf target ;; \
    prebuilt) cp bin/sparkwing-operator /out/bin/ ;; \
    *) echo "BINARIES is source or prebuilt, not $BINARIES" >&2; exit 1 ;; \
    esac

FROM ${BASE} AS operator
# CA certificates (the public base lacks them; ours has them, so no network is needed here), the
# `nonroot` user, and the API's data directory for runs without a volume there.
RUN set -eu; \
    if ! dpkg -s ca-certificates >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    grep -q '^nonroot:' /etc/group || echo 'nonroot:x:65532:' >>/etc/group; \
    grep -q '^nonroot:' /etc/passwd || \
        echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >>/etc/passwd; \
    install -d -o 65532 -g 65532 -m 0750 /var/lib/sparkwing /home/nonroot
COPY --from=binaries /out/bin/sparkwing-operator /usr/local/bin/sparkwing-operator
USER 65532:65532
WORKDIR /home/nonroot
# Metrics and probes (/healthz, /readyz, /metrics) and the API: the chart's ports.
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/sparkwing-operator"]
