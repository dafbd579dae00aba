# The runner image of the operator's runner Jobs and warm pods: `sparkwing` (the runner) and the
# Rust toolchain it compiles the run's `.sparkwing/` with, as uid 65532 on a read-only root with
# a writable /tmp (an emptyDir in the pod). docs/operator.md#images.
#
#   docker build -f images/runner.Dockerfile -t sparkwing-runner:0.1.0 .
#
# Build arguments:
#   BASE        the Debian bookworm image to run on (default: the public bookworm-slim); gcc,
#               libc6-dev (rustc links through cc), git (git sources) and ca-certificates are
#               installed when it lacks them
#   RUST_IMAGE  the Rust image whose toolchain the runner gets and that compiles the binary
#               (default: the public 1.95 slim bookworm)
#   BINARIES    `source`: compile a release from the source in the context (the default);
#               `prebuilt`: take bin/sparkwing from the context (a directory holding only that:
#               images/build.sh stages host-built binaries so; no compiler runs)
ARG BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS binaries
# The toolchain, as rustup lays it out (toolchains/<release>-<host>, settings.toml naming it the
# default), pruned to what `cargo build` needs: cargo, rustc, its libraries and the host's
# standard library (no docs, sources, clippy, rustfmt, rustdoc, debugger scripts).
RUN set -eu; \
    sysroot="$(rustc --print sysroot)"; \
    name="$(rustc -vV | sed -n 's/^release: //p')-$(rustc -vV | sed -n 's/^host: //p')"; \
    dest="/out/rustup/toolchains/$name"; \
    mkdir -p "$dest/bin"; \
    cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$dest/bin/"; \
    cp -a "$sysroot/lib" "$dest/"; \
    rm -rf "$dest/lib/rustlib/src" "$dest/lib/rustlib/rustc-src"; \
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$name" \
        >/out/rustup/settings.toml
ARG BINARIES=source
WORKDIR /src
COPY . .
RUN set -eu; mkdir -p /out/bin; \
    case "$BINARIES" in \
    source) \
        cargo build --release --locked -p sparkwing-cli --bin sparkwing; \
        cp target/release/sparkwing /out/bin/; \
        rm -rf target ;; \
    prebuilt) cp bin/sparkwing /out/bin/ ;; \
    *) echo "BINARIES is source or prebuilt, not $BINARIES" >&2; exit 1 ;; \
    esac

FROM ${BASE} AS runner
RUN set -eu; \
    missing=""; \
    for p in ca-certificates gcc libc6-dev git; do \
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    grep -q '^nonroot:' /etc/group || echo 'nonroot:x:65532:' >>/etc/group; \
    grep -q '^nonroot:' /etc/passwd || \
        echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >>/etc/passwd
COPY --from=binaries /out/rustup /usr/local/rustup
# cargo and rustc on PATH; each finds its toolchain from its real path.
RUN set -eu; for t in cargo rustc; do \
        ln -s /usr/local/rustup/toolchains/*/bin/$t /usr/local/bin/$t; \
    done; \
    cargo --version; rustc --version
COPY --from=binaries /out/bin/sparkwing /usr/local/bin/sparkwing
# Everything written lives under /tmp (the pod's emptyDir): HOME, the runner's state and compile
# cache (SPARKWING_HOME), and cargo's registry cache and locks (CARGO_HOME; a pool may mount a
# volume at /tmp/cargo/registry to keep downloaded crates). The toolchain is read-only.
ENV HOME=/tmp \
    SPARKWING_HOME=/tmp/sparkwing \
    CARGO_HOME=/tmp/cargo \
    RUSTUP_HOME=/usr/local/rustup
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/sparkwing"]
