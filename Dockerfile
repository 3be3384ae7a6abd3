# lockstep: Node 24 runs the TypeScript sources directly (type stripping), so the image holds
# the sources and production dependencies only; there is no build step to drift from the repo.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts here: lockstep's own (postinstall: precompile) needs the sources, which the
# final stage has and precompiles; the one dependency with a script (msgpackr-extract) ships
# prebuilt binaries that load without it (msgpackr falls back to plain JS if they do not).
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts

FROM node:24-bookworm-slim
ENV NODE_ENV=production
# V8 heap settings lockstep ships with (src/node-flags.ts); override NODE_OPTIONS for a larger tenant.
ENV NODE_OPTIONS="--max-old-space-size=512 --max-semi-space-size=16"
# Two malloc arenas instead of one per allocating thread (src/node-flags.ts, NODE_ENV_VARS).
ENV MALLOC_ARENA_MAX=2
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY adapters ./adapters
COPY config ./config
# Every module compiled once, with the flags above, into node_modules/.cache/lockstep: the daemon
# then starts without Node's TypeScript stripper in memory (bin/lockstep.js). Owned by root and
# only read at run time, like the sources it was made from.
RUN node bin/lockstep.js precompile
# The embedded SQLite store writes here when it is used; mount a volume to keep it.
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.LOCKSTEP_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "bin/lockstep.js"]
CMD ["serve", "--config", "/etc/lockstep/lockstep.yaml"]
