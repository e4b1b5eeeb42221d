# One image, three programs: shadow-engine (the entrypoint), shadow-operator and shadowset-csi. See docs/image.md.
#
# Build it with `npm run image` (scripts/build-image.mjs), which makes what this file expects:
#   - BASE_IMAGE: Debian 13 with its nodejs 20 and the CSI node plugin's tools, made here by mmdebstrap and
#     `docker import` (never pulled);
#   - .cache/image/rootfs/: the compiled engine, operator and CSI driver (with csi.proto) and their production
#     dependencies, staged on the host, so this build needs no network (it runs with --network none) and
#     takes seconds.
ARG BASE_IMAGE=localhost/shadowset/node-base:trixie
FROM ${BASE_IMAGE}
ENV NODE_ENV=production
# /opt/shadowset (package.json, node_modules, engine/, operator/, csi/) and the three commands in /usr/local/bin.
COPY .cache/image/rootfs/ /
WORKDIR /opt/shadowset
# No USER: the engine opens member block devices, which are root's inside its pod (the operator drops
# every capability of those pods). The chart runs the operator as UID 65532 (runAsNonRoot, read-only
# root filesystem, no capabilities).
ENTRYPOINT ["shadow-engine"]
