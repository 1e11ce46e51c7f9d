// The Node.js baseline for tests/bench/bench.py: Node's `cluster` module serving the same
// fixed body as clusterd-worker, WORKERS workers on 127.0.0.1:PORT, restarting a worker at
// once from the master's `exit` handler (what PM2's cluster mode does, without backoff).
//
// The master prints one line per event, with the wall clock in seconds (microseconds), so
// the benchmark can time a restart the way it reads clusterd's log:
//   <unix seconds> fork <pid>
//   <unix seconds> listening <pid>
//   <unix seconds> exit <pid> <code|signal>
// SIGTERM/SIGINT to the master stop every worker, then the master.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const { performance } = require('node:perf_hooks');

const port = Number(process.env.PORT || 8080);
const workers = Number(process.env.WORKERS || 1);
const body = process.env.BODY || 'Hello from clusterd-worker\n';

function now() {
    return ((performance.timeOrigin + performance.now()) / 1000).toFixed(6);
}

if (cluster.isPrimary) {
    let stopping = false;
    const fork = () => {
        const w = cluster.fork();
        console.log(`${now()} fork ${w.process.pid}`);
    };
    cluster.on('listening', (w) => console.log(`${now()} listening ${w.process.pid}`));
    cluster.on('exit', (w, code, signal) => {
        console.log(`${now()} exit ${w.process.pid} ${signal || code}`);
        if (stopping) {
            if (Object.keys(cluster.workers).length === 0) process.exit(0);
            return;
        }
        fork();
    });
    const stop = () => {
        if (stopping) return;
        stopping = true;
        if (Object.keys(cluster.workers).length === 0) process.exit(0);
        for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    for (let i = 0; i < workers; ++i) fork();
} else {
    const headers = { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) };
    http.createServer((req, res) => {
        res.writeHead(200, headers);
        res.end(body);
    }).listen(port, '127.0.0.1');
    process.on('SIGTERM', () => process.exit(0));
}
