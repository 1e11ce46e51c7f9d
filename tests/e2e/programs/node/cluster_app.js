// The classic Node cluster app: the primary forks one worker per CPU (or WORKERS), each worker
// serves. Run by `node` it is its own primary; run by clusterd, cluster.isWorker is true in each
// worker clusterd starts, so it only serves, on clusterd's sockets.
"use strict";
const cluster = require("cluster");
const http = require("http");
const os = require("os");

const port = Number(process.env.PORT || 8080);
if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS || (os.availableParallelism?.() ?? os.cpus().length));
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on("exit", (worker, code, signal) => {
    console.log(`primary: worker ${worker.process.pid} exited (${signal || code}), forking another`);
    cluster.fork();
  });
} else {
  http
    .createServer((req, res) => {
      const body = `cluster worker ${cluster.worker.id} pid ${process.pid}\n`;
      res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
      res.end(body);
    })
    .listen(port, () => console.log(`worker ${cluster.worker.id}: pid ${process.pid} listening`));
}
