#!/usr/bin/env bash
# Build the quoteflow image with rootful podman and run the container tests.
#   bash scripts/container-test.sh            # build what is missing, then pytest -m container
#   bash scripts/container-test.sh build      # only install podman & co, build base + image
#   bash scripts/container-test.sh -k kube    # extra args go to pytest
# No container registry is needed: the base images are built from a Debian root made by
# debootstrap from the mirror apt is configured with (/etc/apt/sources.list*), and cached
# (podman's image store, plus the root's tarball in .cache/containers). As root it installs
# podman, buildah, debootstrap and runc with apt; otherwise it says which are missing.
# deploy/podman/containers.conf (runc, ulimits) is used unless CONTAINERS_CONF is set.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PY=${PYTHON:-python3}
CONTAINER_PKGS=(podman buildah debootstrap runc netavark aardvark-dns)
CACHE=${QUOTEFLOW_CONTAINER_CACHE:-$ROOT/.cache/containers}
IMAGE=${QUOTEFLOW_IMAGE:-localhost/quoteflow:latest}
DEBIAN_IMAGE=localhost/quoteflow-debian:bookworm
PYTHON_IMAGE=localhost/quoteflow-python:3.11
REDIS_IMAGE=localhost/quoteflow-redis:7
NGINX_IMAGE=localhost/quoteflow-nginx:1
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}

log() { echo ">> $*" >&2; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

install_tools() {
  local missing=()
  need_cmd podman || missing+=(podman)
  need_cmd buildah || missing+=(buildah)
  need_cmd debootstrap || missing+=(debootstrap)
  need_cmd runc || missing+=(runc)
  [ -x /usr/lib/podman/netavark ] || need_cmd netavark || missing+=(netavark)
  [ -x /usr/lib/podman/aardvark-dns ] || need_cmd aardvark-dns || missing+=(aardvark-dns)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && need_cmd apt-get; then
    log "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing system packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${CONTAINER_PKGS[*]}" >&2
    exit 1
  fi
}

# The Debian mirror apt uses (first URI serving the running release's suite).
debian_mirror() {
  "$PY" - "$1" <<'EOF'
import glob, sys
suite = sys.argv[1]
files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in text.split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.split()
            if suite in fields.get("suites", []) and "deb" in fields.get("types", []):
                print(fields["uris"][0])
                sys.exit(0)
    else:
        for line in text.splitlines():
            words = [w for w in line.split("#")[0].split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                print(words[1])
                sys.exit(0)
sys.exit(f"no apt source for suite {suite!r} in {files}")
EOF
}

# hash of the files an image is built from: a changed file rebuilds the image
content_hash() { cat "$@" | sha256sum | cut -c1-16; }
image_hash() {
  podman image inspect --format '{{index .Labels "quoteflow.hash"}}' "$1" 2>/dev/null || true
}

build_debian() {
  podman image exists "$DEBIAN_IMAGE" && return 0
  local suite tarball
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  tarball=$CACHE/debian-$suite-minbase.tar
  if [ ! -s "$tarball" ]; then
    local mirror rootfs
    mirror=$(debian_mirror "$suite")
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    log "debootstrap --variant=minbase $suite from $mirror"
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$rootfs"; exit 1; }
    # what a slim image leaves out: downloaded .debs, package lists, docs, man pages, locales
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
      "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "podman import $tarball -> $DEBIAN_IMAGE"
  podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$DEBIAN_IMAGE" >/dev/null
}

build_from_debian() {  # image dockerfile
  local image=$1 file=$2 hash
  hash=$(content_hash "$file")
  [ "$(image_hash "$image")" = "$hash" ] && return 0
  log "building $image ($file)"
  podman build --pull=never --quiet --format docker --label "quoteflow.hash=$hash" \
    --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -f "$file" -t "$image" "$(dirname "$file")" >/dev/null
}

# pip's settings on this host (pip config list, PIP_* env), as a pip config file for the
# build: http(s) indexes, trusted hosts, timeout and the CA bundle (as a second secret).
pip_build_conf() {  # dir -> writes dir/pip.conf and dir/cert
  "$PY" - "$1" <<'EOF'
import os, subprocess, sys
out = sys.argv[1]
listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                         capture_output=True, text=True, check=False).stdout
conf: dict[str, str] = {}
for line in listing.splitlines():
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    conf.setdefault(name, value.strip().strip("'\""))  # env first, then files
web = lambda urls: " ".join(u for u in urls.split() if u.startswith(("http://", "https://")))
lines = ["[global]"]
for name in ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout"):
    value = conf.get(name, "")
    if name.endswith("index-url"):
        value = web(value)
    if value:
        lines.append(f"{name} = {value}")
cert = conf.get("cert", "")
with open(os.path.join(out, "cert"), "wb") as f:
    if cert and os.path.isfile(cert):
        f.write(open(cert, "rb").read())
        lines.append("cert = /run/secrets/pip_cert")
with open(os.path.join(out, "pip.conf"), "w") as f:
    f.write("\n".join(lines) + "\n")
EOF
}

build_image() {
  local hash tmp
  hash=$(find deploy/Dockerfile pyproject.toml README.md quoteflow -type f \
    -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)
  if [ "${QUOTEFLOW_REBUILD:-0}" != 1 ] && [ "$(image_hash "$IMAGE")" = "$hash" ]; then
    log "$IMAGE is up to date"
  else
    local old
    old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    tmp=$(mktemp -d)
    chmod 700 "$tmp"
    pip_build_conf "$tmp"
    log "building $IMAGE (BASE_IMAGE=$PYTHON_IMAGE)"
    podman build --pull=never --format docker --label "quoteflow.hash=$hash" \
      --build-arg "BASE_IMAGE=$PYTHON_IMAGE" \
      --secret "id=pip_conf,src=$tmp/pip.conf" --secret "id=pip_cert,src=$tmp/cert" \
      -f deploy/Dockerfile -t "$IMAGE" . >"$CACHE/build.log" 2>&1 \
      || { rm -rf "$tmp"; tail -30 "$CACHE/build.log" >&2; exit 1; }
    rm -rf "$tmp"
    # the replaced image (its layers the new one shares stay: the build cache)
    [ -n "$old" ] && podman rmi "$old" >/dev/null 2>&1 || true
  fi
  log "image size: $(podman image inspect --format '{{.Size}}' "$IMAGE" \
    | awk '{printf "%.0f MB", $1/1e6}') ($IMAGE)"
}

build_all() {
  install_tools
  mkdir -p "$CACHE"
  build_debian
  build_from_debian "$PYTHON_IMAGE" deploy/podman/python.Dockerfile
  build_from_debian "$REDIS_IMAGE" deploy/podman/redis.Dockerfile
  build_from_debian "$NGINX_IMAGE" deploy/podman/nginx.Dockerfile
  build_image
}

case "${1:-}" in
  build) build_all ;;
  *)
    build_all
    export QUOTEFLOW_IMAGE=$IMAGE QUOTEFLOW_REDIS_IMAGE=$REDIS_IMAGE QUOTEFLOW_NGINX_IMAGE=$NGINX_IMAGE
    exec "$PY" -m pytest -m container tests/containers "$@"
    ;;
esac
