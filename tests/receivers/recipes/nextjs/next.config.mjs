// The Next.js app around docs/snippets/nextjs_route.js (tests/receivers/recipes/nextjs/build.sh).
export default {
  // A separate dist dir per tree is not needed: the build lives in this directory's .next.
  poweredByHeader: false,
};
