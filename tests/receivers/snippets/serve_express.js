// Test harness for the Express snippets of docs/receiving-webhooks.md, run by
// tests/it/receiving_docs.rs as
//   NODE_PATH=tests/receivers/express/node_modules WEBHOOK_SECRET=.. node serve_express.js SNIPPET
// Loads the snippet (which exports its Express app, or { app, ... }), listens on 127.0.0.1 on an
// ephemeral port and prints `LISTENING <port>`. The snippet's own listen code only runs when it
// is the main module, so it stays unused here.
const path = require('path');

const snippet = require(path.resolve(process.argv[2]));
const app = typeof snippet === 'function' ? snippet : snippet.app;

const server = app.listen(0, '127.0.0.1', (err) => {
  if (err) {
    process.stderr.write(`HARNESS listen failed: ${err.stack || err}\n`);
    process.exit(1);
  }
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
