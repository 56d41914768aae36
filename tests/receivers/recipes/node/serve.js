// Test harness for the Node.js recipes of docs/receiving-webhooks.md, run by tests/it/recipes.rs
// as
//   NODE_PATH=tests/receivers/recipes/node/node_modules WEBHOOK_SECRET=.. node serve.js RECIPE
// Loads the recipe, which exports its app (Express, Fastify or Hono), listens on 127.0.0.1 on an
// ephemeral port and prints `LISTENING <port>`. The recipe's own listen code only runs when it
// is the main module, so it stays unused here.
const path = require('path');

const app = require(path.resolve(process.argv[2]));

function listening(port) {
  process.stdout.write(`LISTENING ${port}\n`);
}

function failed(err) {
  process.stderr.write(`HARNESS listen failed: ${err.stack || err}\n`);
  process.exit(1);
}

if (typeof app.fetch === 'function') {
  // Hono.
  const { serve } = require('@hono/node-server');
  serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => listening(info.port));
} else if (typeof app.ready === 'function' && app.server) {
  // Fastify.
  app.listen({ port: 0, host: '127.0.0.1' }).then(() => listening(app.server.address().port), failed);
} else {
  // Express.
  const server = app.listen(0, '127.0.0.1', (err) => (err ? failed(err) : listening(server.address().port)));
}
