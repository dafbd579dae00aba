# A local stand-in for the public Rust image (the RUST_IMAGE the operator and runner images
# default to), for machines that reach no registry: a Debian base with gcc, libc6-dev and git plus
# a toolchain copied from the host, laid out as that image has it (RUSTUP_HOME=/usr/local/rustup,
# CARGO_HOME=/usr/local/cargo, cargo and rustc in /usr/local/cargo/bin). images/build.sh builds it;
# its context is toolchains/<release>-<host>/ (the host toolchain, pruned).
ARG BASE=debian:bookworm-slim
FROM ${BASE}
COPY toolchains /usr/local/rustup/toolchains
RUN set -eu; \
    name="$(ls /usr/local/rustup/toolchains)"; \
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$name" \
        >/usr/local/rustup/settings.toml; \
    mkdir -p /usr/local/cargo/bin; \
    for t in cargo rustc; do \
        ln -s "/usr/local/rustup/toolchains/$name/bin/$t" "/usr/local/cargo/bin/$t"; \
    done
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo --version && rustc --version
