# syntax=docker/dockerfile:1
# One image, two programs: shadow-engine (the entrypoint) and shadow-operator. See docs/image.md.

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
RUN npm ci --no-audit --no-fund
COPY tsconfig.base.json ./
COPY engine engine
COPY operator operator
# The product projects only: the tests are projects of their own (tsconfig.test.json, engine/itest).
RUN npx tsc -b engine operator && npm prune --omit=dev --no-audit --no-fund
# Gather what ships: the root node_modules, and for engine and operator their manifest, bin/ and dist/
# (without source maps, and without compiled tests should any be there), plus a workspace node_modules
# where npm made one.
RUN set -eu; \
    mkdir -p /out; \
    cp -a package.json node_modules /out/; \
    rm -f /out/node_modules/@shadowset/e2e /out/node_modules/@shadowset/testkit; \
    for ws in engine operator; do \
      mkdir -p "/out/$ws"; \
      cp -a "$ws/package.json" "$ws/bin" "$ws/dist" "/out/$ws/"; \
      if [ -d "$ws/node_modules" ]; then cp -a "$ws/node_modules" "/out/$ws/"; fi; \
    done; \
    find /out/engine/dist /out/operator/dist -type f \
      \( -name '*.test.js' -o -name '*.itest.js' -o -name '*.ctest.js' -o -name '*.torture.js' \
         -o -name '*.test.d.ts' -o -name '*.itest.d.ts' -o -name '*.ctest.d.ts' -o -name '*.torture.d.ts' \
         -o -name '*.map' \) -delete

# ---- runtime ----
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /opt/shadowset
COPY --from=build /out/ ./
RUN chmod 0755 engine/bin/shadow-engine.js operator/bin/shadow-operator.js \
 && ln -s /opt/shadowset/engine/bin/shadow-engine.js /usr/local/bin/shadow-engine \
 && ln -s /opt/shadowset/operator/bin/shadow-operator.js /usr/local/bin/shadow-operator
# No USER: the engine opens member block devices, which are root's inside its pod. The chart runs the
# operator as UID 65532 (runAsNonRoot, read-only root filesystem, no capabilities).
ENTRYPOINT ["shadow-engine"]
