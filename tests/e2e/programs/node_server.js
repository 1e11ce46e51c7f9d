// A Node.js HTTP worker for clusterd (node's http module only): takes its listening socket
// from fd 3 (systemd socket activation: LISTEN_PID, LISTEN_FDS) and stops gracefully on
// SIGTERM (exit 0). Under clusterd's `ipc: node` (its default for a node command) a
// listen({fd: 3}) is a cluster worker's query for fd 3, answered with the same socket; an app
// that just calls listen(PORT) works too (programs/node/app.js, tests/e2e/test_node.py).
"use strict";
const http = require("http");

if (process.env.LISTEN_PID !== String(process.pid) || !(Number(process.env.LISTEN_FDS) >= 1)) {
  console.error("node_server: no socket passed (LISTEN_PID/LISTEN_FDS): run me under clusterd");
  process.exit(78);
}
for (const name of ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]) delete process.env[name];

const id = process.env.CLUSTERD_WORKER_ID ?? "?";
const server = http.createServer((req, res) => {
  const body = `node worker ${id} pid ${process.pid}\n`;
  res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
});

server.listen({ fd: 3 }, () => console.log(`node_server: pid ${process.pid} listening on fd 3`));

process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
