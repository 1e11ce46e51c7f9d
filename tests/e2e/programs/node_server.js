// A Node.js HTTP worker for clusterd (node's http module only): takes its listening socket
// from fd 3 (systemd socket activation: LISTEN_PID, LISTEN_FDS) and stops gracefully on
// SIGTERM (exit 0). Node has no unix datagram sockets without a native module, so it cannot
// send READY=1 to NOTIFY_SOCKET: run it with `ready: started` (ready once up for start_time).
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
