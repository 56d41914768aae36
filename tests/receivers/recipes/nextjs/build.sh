#!/usr/bin/env bash
# Builds the Next.js app of the route handler recipe (docs/snippets/nextjs_route.js) for
# `next start`, unless .next/hookd-build-stamp says this recipe, lockfile and node were built.
# Run by scripts/test-deps.sh and, when the stamp is stale, by tests/it/recipes.rs.
# The recipe is copied to app/webhook/abstrakt/route.js (ignored by git): the build runs it as
# it is in the docs.
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$DIR/../../../.." && pwd)"
RECIPE="$ROOT/docs/snippets/nextjs_route.js"
cd "$DIR"
[ -f node_modules/next/package.json ] || { echo "next is not installed in $DIR/node_modules: run scripts/test-deps.sh" >&2; exit 1; }
want="node=$(node --version) $(cat "$RECIPE" package-lock.json next.config.mjs app/layout.js | sha256sum | cut -d' ' -f1)"
if [ -f .next/hookd-build-stamp ] && [ "$(cat .next/hookd-build-stamp)" = "$want" ]; then
    echo "nextjs: build up to date"
    exit 0
fi
mkdir -p app/webhook/abstrakt
cp "$RECIPE" app/webhook/abstrakt/route.js
NEXT_TELEMETRY_DISABLED=1 node node_modules/next/dist/bin/next build >build.log 2>&1 \
    || { tail -n 40 build.log >&2; exit 1; }
printf '%s' "$want" >.next/hookd-build-stamp
echo "nextjs: built"
