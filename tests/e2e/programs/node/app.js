// A plain Node HTTP app, unmodified for clusterd: it calls listen(PORT) as any app does, and
// clusterd (as the Node cluster primary) hands it the master's socket for that port. The rest is
// what the end-to-end tests drive (tests/e2e/test_node.py), through the environment:
//   PORT            the port to listen on (8080)
//   SEND_READY=1    process.send('ready') once listening (PM2's wait_ready), after READY_DELAY_MS
//   HEARTBEAT_MS    process.send('heartbeat') this often (for clusterd's watchdog)
//   STATUS_MS       process.send({notify: 'STATUS=tick N'}) this often
//   TERM_EXIT       exit with this code on SIGTERM (to tell a signal from the 'shutdown' message)
// GET /block busy-loops forever: the event loop is blocked, as by a CPU-bound request handler.
"use strict";
const http = require("http");

const port = Number(process.env.PORT || 8080);
const server = http.createServer((req, res) => {
  if (req.url === "/block") for (;;);
  const body = `node app pid ${process.pid}\n`;
  res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
});

server.on("error", (e) => {
  console.error(`app: listen failed: ${e.message}`);
  process.exit(3);
});

server.listen(port, () => {
  console.log(`app: pid ${process.pid} listening on ${port}`);
  if (process.env.SEND_READY === "1")
    setTimeout(() => process.send("ready"), Number(process.env.READY_DELAY_MS || 0));
});

if (process.env.HEARTBEAT_MS)
  setInterval(() => process.send("heartbeat"), Number(process.env.HEARTBEAT_MS));
let ticks = 0;
if (process.env.STATUS_MS)
  setInterval(() => process.send({ notify: `STATUS=tick ${++ticks}` }), Number(process.env.STATUS_MS));

process.on("message", (m) => {
  if (m === "shutdown") {
    console.log(`app: pid ${process.pid} got 'shutdown'`);
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  }
});

if (process.env.TERM_EXIT)
  process.on("SIGTERM", () => {
    console.log(`app: pid ${process.pid} got SIGTERM`);
    process.exit(Number(process.env.TERM_EXIT));
  });
