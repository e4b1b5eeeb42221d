# syntax=docker/dockerfile:1
# One image, three programs: shadow-engine (the entrypoint), shadow-operator and shadowset-csi. See docs/image.md.

# ---- the CSI spec's csi.proto, from its Go module (Apache-2.0: its LICENSE ships beside it) ----
# The version is csi/scripts/csi-spec.mjs's (a unit test checks that both name the same one).
FROM golang:1.26-bookworm AS csi-spec
ARG CSI_SPEC_VERSION=v1.13.0
RUN set -eu; cd /tmp; \
    GOFLAGS=-mod=mod go mod download -json "github.com/container-storage-interface/spec@${CSI_SPEC_VERSION}" > spec.json; \
    dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' spec.json)"; \
    mkdir -p /spec; cp "$dir/csi.proto" "$dir/LICENSE" /spec/; echo "${CSI_SPEC_VERSION}" > /spec/VERSION

# ---- build: install everything, compile, then drop the dev dependencies ----
FROM node:20-bookworm AS build
WORKDIR /src
# Manifests first, so the npm ci layer is reused until a dependency changes.
COPY package.json package-lock.json ./
COPY engine/package.json engine/
COPY operator/package.json operator/
# The test workspaces (e2e, testkit): their manifests only, since npm ci wants every workspace of the
# lockfile; none of their code is copied, built or shipped.
COPY e2e/package.json e2e/
COPY testkit/package.json testkit/
COPY csi/package.json csi/
RUN npm ci --no-audit --no-fund
COPY tsconfig.base.json ./
COPY engine engine
COPY operator operator
COPY csi csi
COPY --from=csi-spec /spec csi/proto
# The product projects only: the tests are projects of their own (tsconfig.test.json, engine/itest).
RUN npx tsc -b engine operator csi && npm prune --omit=dev --no-audit --no-fund
# Gather what ships: the root node_modules, and for engine, operator and the CSI driver their manifest,
# bin/ and dist/ (without source maps, and without compiled tests should any be there), plus a workspace
# node_modules where npm made one; the CSI driver's csi.proto and its licence too.
RUN set -eu; \
    mkdir -p /out; \
    cp -a package.json node_modules /out/; \
    rm -f /out/node_modules/@shadowset/e2e /out/node_modules/@shadowset/testkit; \
    for ws in engine operator csi; do \
      mkdir -p "/out/$ws"; \
      cp -a "$ws/package.json" "$ws/bin" "$ws/dist" "/out/$ws/"; \
      if [ -d "$ws/node_modules" ]; then cp -a "$ws/node_modules" "/out/$ws/"; fi; \
    done; \
    cp -a csi/proto /out/csi/; \
    rm -rf /out/csi/dist/itest; \
    find /out/engine/dist /out/operator/dist /out/csi/dist -type f \
      \( -name '*.test.js' -o -name '*.itest.js' -o -name '*.ctest.js' -o -name '*.torture.js' \
         -o -name '*.test.d.ts' -o -name '*.itest.d.ts' -o -name '*.ctest.d.ts' -o -name '*.torture.d.ts' \
         -o -name '*.map' \) -delete

# ---- runtime ----
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /opt/shadowset
# The CSI node plugin's tools: qemu-storage-daemon (NBD client → FUSE export), losetup/mount/findmnt/blockdev,
# blkid, mkfs.ext4 and mkfs.xfs.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends qemu-system-common fuse3 util-linux mount e2fsprogs xfsprogs \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ ./
RUN chmod 0755 engine/bin/shadow-engine.js operator/bin/shadow-operator.js csi/bin/shadowset-csi.js \
 && ln -s /opt/shadowset/engine/bin/shadow-engine.js /usr/local/bin/shadow-engine \
 && ln -s /opt/shadowset/operator/bin/shadow-operator.js /usr/local/bin/shadow-operator \
 && ln -s /opt/shadowset/csi/bin/shadowset-csi.js /usr/local/bin/shadowset-csi
# No USER: the engine opens member block devices, which are root's inside its pod. The chart runs the
# operator as UID 65532 (runAsNonRoot, read-only root filesystem, no capabilities).
ENTRYPOINT ["shadow-engine"]
