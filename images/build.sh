#!/usr/bin/env bash
# Builds the operator and runner images here, where no registry is reachable
# (docs/operator.md#images): the local Debian bases (images/base.sh), a local stand-in for the
# public Rust image made from the host's toolchain (images/rust.Dockerfile), then both images
# from host-built binaries (BINARIES=prebuilt: no compiler runs inside Docker).
#
# Usage: images/build.sh [--profile release|debug] [--save DIR]
#   --profile  which host build goes in (default release; the tests use debug, already built)
#   --save     also `docker save` both images to DIR/operator.tar and DIR/runner.tar
# Environment: OPERATOR_IMAGE, RUNNER_IMAGE (the tags), CARGO, CARGO_TARGET_DIR.
#
# Cached by content: every image carries a label with the hash of its inputs (Dockerfile, base
# and Rust image ids, the binary); an image whose label matches is not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
save=""
while [ $# -gt 0 ]; do
    case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --save) save="$2"; shift 2 ;;
    *) echo "usage: images/build.sh [--profile release|debug] [--save DIR]" >&2; exit 2 ;;
    esac
done
case "$profile" in release | debug) ;; *) echo "--profile is release or debug" >&2; exit 2 ;; esac

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
OPERATOR_IMAGE="${OPERATOR_IMAGE:-sparkwing-operator:$version}"
# Not sparkwing-runner:<version>: in a local Docker engine that is the Docker executor's runner
# image (`sparkwing runner-image build`). Publish this one under the chart's name.
RUNNER_IMAGE="${RUNNER_IMAGE:-sparkwing-kube-runner:$version}"
BASE_IMAGE=sparkwing-base:bookworm
RUNNER_BASE_IMAGE=sparkwing-base:bookworm-runner
LABEL=dev.sparkwing.image.inputs
CARGO="${CARGO:-cargo}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
stage="$target_dir/images"
mkdir -p "$stage"

step_started=$SECONDS
step() {
    echo "== $*"
    step_started=$SECONDS
}
done_step() {
    echo "   ($((SECONDS - step_started))s)"
}

image_label() {
    docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true
}
image_id() {
    docker image inspect --format '{{.Id}}' "$1"
}
megabytes() {
    docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'
}

# docker_build TAG KEY CONTEXT DOCKERFILE [build args...]: build unless TAG carries KEY. The
# builder's output goes to a log, shown when it fails.
docker_build() {
    local tag="$1" key="$2" context="$3" dockerfile="$4"
    shift 4
    if [ "$(image_label "$tag")" = "$key" ]; then
        echo "   $tag is up to date"
        return 0
    fi
    local log="$stage/build-${tag//[:\/]/_}.log"
    local previous
    previous="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
    local args=()
    for a in "$@"; do args+=(--build-arg "$a"); done
    if ! docker build --label "$LABEL=$key" -f "$dockerfile" -t "$tag" "${args[@]}" "$context" \
        >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "images/build.sh: building $tag failed (log: $log)" >&2
        exit 1
    fi
    # The image this tag named before, now untagged: removed (refused, harmlessly, while another
    # tag or a container still uses it), so rebuilds do not pile up.
    if [ -n "$previous" ] && [ "$previous" != "$(image_id "$tag")" ]; then
        docker rmi "$previous" >/dev/null 2>&1 || true
    fi
    echo "   built $tag ($(megabytes "$tag"))"
}

hash_of() {
    sha256sum "$@" | awk '{print $1}' | sha256sum | cut -c1-32
}

step "base images"
bash images/base.sh all
done_step

step "host binaries ($profile)"
profile_flag=()
[ "$profile" = release ] && profile_flag=(--release)
"$CARGO" build "${profile_flag[@]}" -p sparkwing-cli --bin sparkwing \
    -p sparkwing-operator --bin sparkwing-operator
bin_dir="$target_dir/$profile"
done_step

# The Rust image the Dockerfiles take the toolchain from: the host's toolchain, as a stand-in for
# the public one (same version, same layout).
step "local Rust image"
sysroot="$(rustc --print sysroot)"
rustc_vv="$(rustc -vV)"
release="$(sed -n 's/^release: //p' <<<"$rustc_vv")"
toolchain="$release-$(sed -n 's/^host: //p' <<<"$rustc_vv")"
RUST_IMAGE="sparkwing-rust:$release"
rust_key="$(printf '%s\n' "$rustc_vv" "$(image_id "$RUNNER_BASE_IMAGE")" \
    "$(cat images/rust.Dockerfile)" | sha256sum | cut -c1-32)"
if [ "$(image_label "$RUST_IMAGE")" != "$rust_key" ]; then
    # Only what `cargo build` needs: cargo, rustc, their libraries, the standard library.
    rm -rf "$stage/rust"
    mkdir -p "$stage/rust/toolchains/$toolchain/bin"
    cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$stage/rust/toolchains/$toolchain/bin/"
    cp -a "$sysroot/lib" "$stage/rust/toolchains/$toolchain/"
    rm -rf "$stage/rust/toolchains/$toolchain/lib/rustlib/src" \
        "$stage/rust/toolchains/$toolchain/lib/rustlib/rustc-src"
fi
docker_build "$RUST_IMAGE" "$rust_key" "$stage/rust" images/rust.Dockerfile \
    "BASE=$RUNNER_BASE_IMAGE"
rm -rf "$stage/rust"
done_step

# stage_binary NAME: the host binary, without its debug info (a debug build's is most of its
# size), alone in a build context: $stage/NAME/bin/NAME.
stage_binary() {
    rm -rf "${stage:?}/$1"
    mkdir -p "$stage/$1/bin"
    strip --strip-debug -o "$stage/$1/bin/$1" "$bin_dir/$1"
}

step "operator image $OPERATOR_IMAGE"
stage_binary sparkwing-operator
key="$(printf '%s\n' "$(image_id "$BASE_IMAGE")" "$(image_id "$RUST_IMAGE")" \
    "$(hash_of images/operator.Dockerfile "$stage/sparkwing-operator/bin/sparkwing-operator")" |
    sha256sum | cut -c1-32)"
docker_build "$OPERATOR_IMAGE" "$key" "$stage/sparkwing-operator" images/operator.Dockerfile \
    "BASE=$BASE_IMAGE" "RUST_IMAGE=$RUST_IMAGE" BINARIES=prebuilt
done_step

step "runner image $RUNNER_IMAGE"
stage_binary sparkwing
key="$(printf '%s\n' "$(image_id "$RUNNER_BASE_IMAGE")" "$(image_id "$RUST_IMAGE")" \
    "$(hash_of images/runner.Dockerfile "$stage/sparkwing/bin/sparkwing")" |
    sha256sum | cut -c1-32)"
docker_build "$RUNNER_IMAGE" "$key" "$stage/sparkwing" images/runner.Dockerfile \
    "BASE=$RUNNER_BASE_IMAGE" "RUST_IMAGE=$RUST_IMAGE" BINARIES=prebuilt
done_step

if [ -n "$save" ]; then
    step "saving to $save"
    mkdir -p "$save"
    docker save -o "$save/operator.tar" "$OPERATOR_IMAGE"
    docker save -o "$save/runner.tar" "$RUNNER_IMAGE"
    done_step
fi

echo "images: $OPERATOR_IMAGE ($(megabytes "$OPERATOR_IMAGE")), $RUNNER_IMAGE ($(megabytes "$RUNNER_IMAGE"))"
