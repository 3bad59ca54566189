# syntax=docker/dockerfile:1
# One image per runnable, selected with a build argument:
#   docker build --build-arg RUNNABLE=services/user -t coinmesh/user:dev .
# RUNNABLE is one of services/user, services/order, services/rate, gateway.
# Node 24 runs the TypeScript sources directly, so there is no compile stage:
# the first stage installs production dependencies, the second only copies.

# Keep in step with the "node" devDependency in package.json (a test checks it).
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

FROM ${NODE_IMAGE} AS deps
ARG RUNNABLE
WORKDIR /app
# Every workspace manifest is needed for `npm ci` to accept the lockfile.
COPY package.json package-lock.json ./
COPY proto/package.json proto/
COPY lib/package.json lib/
COPY services/user/package.json services/user/
COPY services/order/package.json services/order/
COPY services/rate/package.json services/rate/
COPY gateway/package.json gateway/
# Only the runnable's production dependencies (its workspace deps proto and lib
# are linked); the root has devDependencies only, including the `node` package,
# which the image does not need because it brings its own node.
RUN --mount=type=cache,target=/root/.npm \
    test -n "${RUNNABLE}" \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --workspace "${RUNNABLE}"
COPY proto proto
COPY lib lib
COPY ${RUNNABLE} ${RUNNABLE}

FROM ${NODE_IMAGE}
ARG RUNNABLE
# npm and corepack are not needed at run time; less to patch and to exploit.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
 && groupadd --system --gid 10001 coinmesh \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin coinmesh
ENV NODE_ENV=production \
    RUNNABLE=${RUNNABLE} \
    HOST=0.0.0.0
WORKDIR /app
# Owned by root and not writable by the app user.
COPY --from=deps /app /app
# Numeric, so Kubernetes can verify runAsNonRoot; not 1337, which Istio reserves.
USER 10001:10001
EXPOSE 50051 8080 9464
# exec replaces the shell, so node is PID 1 and receives SIGTERM itself.
# Arguments are passed on: `docker run IMAGE migrate` applies migrations.
ENTRYPOINT ["/bin/sh", "-c", "exec node --import ./lib/src/telemetry-register.ts \"${RUNNABLE}/src/main.ts\" \"$@\"", "--"]
