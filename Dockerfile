# syntax=docker/dockerfile:1
#
# The manifold image: `manifold serve` (Argo CD's repo-server API) and
# `manifold cmp-server` (plugin sidecars), with git, git-lfs, ssh, gpg, helm v3
# and kustomize, running as uid/gid 999 (`argocd`) like Argo CD's image.
#
#   docker build -t manifold .
#   docker run --rm -p 8081:8081 -p 8084:8084 manifold serve --disable-tls
#
# Stages: `builder` compiles the binary, `tools` downloads helm and kustomize
# (pinned versions, sha256-checked), the last stage is the runtime image.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

####################################################################################################
# builder: cargo build --release --locked
####################################################################################################
FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder

# zlib for libgit2 (linked dynamically, as the runtime image has zlib1g).
# Not version-pinned: the build stage is thrown away, and Debian replaces
# package versions with security updates, so a pin would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the manifest, the lock
# file, the build script, the protos or the benches (declared in Cargo.toml,
# so cargo wants them present; not compiled) change, not on every source
# edit. A stub crate lets cargo compile every dependency.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY benches ./benches
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

COPY src ./src
# touch: the copied sources may be older than the stub build's outputs, and
# cargo compares modification times.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin manifold \
    && install -D -m 0755 target/release/manifold /out/manifold

####################################################################################################
# tools: helm v3 and kustomize from their official release downloads
####################################################################################################
FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim AS tools

# Set by BuildKit for the platform being built (amd64 or arm64).
ARG TARGETARCH
# Checksums from the projects' release pages (get.helm.sh/*.sha256sum and
# kustomize's checksums.txt); bump version and checksums together.
ARG HELM_VERSION=3.21.0
ARG HELM_SHA256_AMD64=0093eb572e3d2380f094df162ddb525e219249de88957afe24cfbb19632acd36
ARG HELM_SHA256_ARM64=8de5a0c9a47431e59fd560e91e0779c8cf9316c383da7efb84128a4c339ecb2d
ARG KUSTOMIZE_VERSION=5.8.1
ARG KUSTOMIZE_SHA256_AMD64=029a7f0f4e1932c52a0476cf02a0fd855c0bb85694b82c338fc648dcb53a819d
ARG KUSTOMIZE_SHA256_ARM64=0953ea3e476f66d6ddfcd911d750f5167b9365aa9491b2326398e289fef2c142

# Download tools only; this stage is thrown away (see the builder's note on
# pins).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /download
RUN arch="${TARGETARCH:-amd64}" \
    && case "$arch" in \
         amd64) helm_sha="$HELM_SHA256_AMD64"; kustomize_sha="$KUSTOMIZE_SHA256_AMD64" ;; \
         arm64) helm_sha="$HELM_SHA256_ARM64"; kustomize_sha="$KUSTOMIZE_SHA256_ARM64" ;; \
         *) echo "unsupported architecture: $arch" >&2; exit 1 ;; \
       esac \
    && curl -fsSL --retry 3 -o helm.tar.gz \
         "https://get.helm.sh/helm-v${HELM_VERSION}-linux-${arch}.tar.gz" \
    && echo "${helm_sha}  helm.tar.gz" | sha256sum -c - \
    && curl -fsSL --retry 3 -o kustomize.tar.gz \
         "https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize/v${KUSTOMIZE_VERSION}/kustomize_v${KUSTOMIZE_VERSION}_linux_${arch}.tar.gz" \
    && echo "${kustomize_sha}  kustomize.tar.gz" | sha256sum -c - \
    && tar -xzf helm.tar.gz "linux-${arch}/helm" \
    && tar -xzf kustomize.tar.gz kustomize \
    && install -D -m 0755 "linux-${arch}/helm" /out/helm \
    && install -D -m 0755 kustomize /out/kustomize \
    && /out/helm version --short \
    && /out/kustomize version

####################################################################################################
# runtime
####################################################################################################
FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="manifold" \
      org.opencontainers.image.description="A drop-in, faster repo-server for Argo CD" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# git and its helpers for fetching (git-lfs, ssh), gnupg for the keyring
# paths Argo CD mounts, CA certificates for HTTPS remotes. Not
# version-pinned on purpose: Debian's archive replaces versions with security
# updates, so pins would break rebuilds; rebuild the image to pick up fixes.
# The argocd user is uid/gid 999 like Argo CD's image (sidecars and
# securityContexts assume it).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git git-lfs gnupg openssh-client \
    && rm -rf /var/lib/apt/lists/* /usr/share/doc/* \
    && git lfs install --system --skip-repo \
    && groupadd --gid 999 argocd \
    && useradd --uid 999 --gid 999 --home-dir /home/argocd --create-home --shell /usr/sbin/nologin argocd \
    && mkdir -p /app/config/ssh /app/config/tls /app/config/gpg/source /app/config/gpg/keys \
                /app/config/reposerver/tls /home/argocd/cmp-server/plugins /home/argocd/cmp-server/config \
    && touch /app/config/ssh/ssh_known_hosts \
    && ln -s /app/config/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts \
    && chown -R 999:999 /home/argocd /app/config/gpg/keys \
    && chmod 0700 /app/config/gpg/keys

COPY --from=tools /out/helm /out/kustomize /usr/local/bin/
COPY --from=builder /out/manifold /usr/local/bin/manifold
# Argo CD's program names run manifold's matching command, so manifests
# written for the argocd image work unchanged (argo-helm passes
# argocd-repo-server as the first argument; its copyutil init container
# copies /usr/local/bin/argocd for plugin sidecars, which then run it as
# argocd-cmp-server).
RUN ln -s manifold /usr/local/bin/argocd \
    && ln -s manifold /usr/local/bin/argocd-repo-server \
    && ln -s manifold /usr/local/bin/argocd-cmp-server

# Clones, object stores and render scratch space live under $TMPDIR: mount a
# volume (an emptyDir in Kubernetes) there, so the root filesystem can stay
# read-only.
ENV TMPDIR=/tmp \
    HOME=/home/argocd \
    USER=argocd
VOLUME ["/tmp"]

USER 999:999
WORKDIR /home/argocd

# 8081: gRPC (repo-server API). 8084: HTTP (/healthz, /metrics, /api/webhook).
EXPOSE 8081 8084

# manifold is the subreaper of everything it starts and reaps orphans itself:
# no init process in front of it.
ENTRYPOINT ["/usr/local/bin/manifold"]
CMD ["serve"]
