#!/usr/bin/env bash
# Build and run the otlp-stats image with Debian's podman, where no image registry is reachable.
#
#   deploy/docker/image.sh deps         install podman, runc, debootstrap, dnsname (Debian; root/sudo)
#   deploy/docker/image.sh base         the local Debian base image, built once and then reused
#   deploy/docker/image.sh build        the base, then the otlp-stats image from this checkout
#   deploy/docker/image.sh prometheus   the base, then a Prometheus image from Debian's package
#   deploy/docker/image.sh podman ARGS  podman with the flags this machine needs (tests use it)
#   deploy/docker/image.sh global-flags podman's global flags alone (for podman-compose)
#
# The base replaces python:3.11-slim-bookworm, which cannot be pulled here: a debootstrap'd
# Debian bookworm with Debian's python3, and the machine's CA bundle, since package downloads go
# through a TLS-intercepting proxy, as on a corporate network. Environment: IMAGE, BASE_IMAGE,
# PROMETHEUS_IMAGE (names), CA_BUNDLE (the bundle copied into the base).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGE=${IMAGE:-localhost/otlp-stats:local}
BASE_IMAGE=${BASE_IMAGE:-localhost/otlp-stats-base:bookworm}
PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-localhost/otlp-stats-prometheus:local}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
BASE_PACKAGES=(python3 python3-venv python3-dev python-is-python3)
# crun fails on this machine's cgroups and overlay needs kernel support it may lack: runc, vfs
# and cgroupfs work everywhere podman does.
GLOBAL_FLAGS=(--storage-driver vfs --runtime runc --cgroup-manager cgroupfs)
# The network namespace cannot be set up here, and without explicit ulimits the runtime refuses
# to copy the host's.
RUN_FLAGS=(--network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

engine() { command podman "${GLOBAL_FLAGS[@]}" "$@"; }

# podman with the global flags, and the run flags after the commands that start containers.
engine_with_run_flags() {
    case "${1:-}" in
        run | create | build) engine "$1" "${RUN_FLAGS[@]}" "${@:2}" ;;
        *) engine "$@" ;;
    esac
}

deps() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    # Container names resolve on a compose network only through this CNI plugin (podman 4.3 on
    # CNI): without it, Prometheus cannot find otlp-stats:9464 by name.
    [ -x /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
    [ ${#missing[@]} -eq 0 ] && return
    echo "installing Debian's ${missing[*]}"
    $SUDO apt-get update -qq >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# The machine's CAs as local CAs of the tree (one PEM file each, as update-ca-certificates wants),
# so that TLS through the intercepting proxy verifies in the base and every image built on it,
# and stays so when a later package install regenerates the bundle. pip reads that bundle
# through Debian's patched certifi (python3-pip-whl depends on ca-certificates).
trust_machine_cas() {
    local local_cas="$1/usr/local/share/ca-certificates/machine"
    $SUDO mkdir -p "$local_cas"
    $SUDO awk -v dir="$local_cas" '
        /-----BEGIN CERTIFICATE-----/ { n++; file = sprintf("%s/%03d.crt", dir, n) }
        file { print > file }
        /-----END CERTIFICATE-----/ { close(file); file = "" }
    ' "$CA_BUNDLE"
    $SUDO chroot "$1" update-ca-certificates >/dev/null 2>&1
}

base() {
    if engine image exists "$BASE_IMAGE"; then
        return
    fi
    deps
    echo "building the base image $BASE_IMAGE (debootstrap, once)"
    local tree
    tree=$(mktemp -d /var/tmp/otlp-stats-base.XXXXXX)
    # shellcheck disable=SC2064  # expand now: the trap must remove this tree
    trap "umount '$tree/proc' 2>/dev/null || true; rm -rf '$tree'" EXIT
    $SUDO debootstrap --variant=minbase bookworm "$tree" >"$tree.log" 2>&1 || {
        tail -20 "$tree.log"
        return 1
    }
    rm -f "$tree.log"
    $SUDO cp /etc/resolv.conf "$tree/etc/resolv.conf"
    $SUDO mount -t proc proc "$tree/proc"
    # No _apt sandbox user in a bare chroot's downloads; the packages come signed all the same.
    local apt=(apt-get -qq -o APT::Sandbox::User=root)
    $SUDO chroot "$tree" "${apt[@]}" update
    $SUDO chroot "$tree" env DEBIAN_FRONTEND=noninteractive \
        "${apt[@]}" install -y --no-install-recommends "${BASE_PACKAGES[@]}" >/dev/null
    trust_machine_cas "$tree"
    $SUDO chroot "$tree" apt-get clean
    $SUDO umount "$tree/proc"
    $SUDO rm -rf "$tree"/var/lib/apt/lists/* "$tree/etc/resolv.conf"
    # mktemp made the tree 0700, and its mode becomes that of / in the image.
    $SUDO chmod 0755 "$tree"
    # An imported tree has no configuration: give it what the python image sets.
    $SUDO tar -C "$tree" -c . | engine import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
}

build() {
    base
    local started=$SECONDS
    # --format docker keeps HEALTHCHECK, which the OCI format has no field for.
    engine_with_run_flags build --format docker --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
        --tag "$IMAGE" --file "$ROOT/Dockerfile" "$ROOT"
    echo "built $IMAGE in $((SECONDS - started)) s"
    # With vfs every layer is a full copy: the image a rebuild replaced would hold about 1 GB
    # each time, so untagged images go (the cache saves little here, the disk matters more).
    engine image prune --force >/dev/null
}

prometheus() {
    base
    engine_with_run_flags build --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --tag "$PROMETHEUS_IMAGE" "$ROOT/deploy/prometheus"
}

case "${1:-}" in
    deps) deps ;;
    base) base ;;
    build) build ;;
    prometheus) prometheus ;;
    podman) engine_with_run_flags "${@:2}" ;;
    global-flags) echo "${GLOBAL_FLAGS[*]}" ;;
    *)
        sed -n '2,10p' "$0" >&2
        exit 64
        ;;
esac
