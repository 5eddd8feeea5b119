// bun_tls_load.js — the Bun (BoringSSL) workload of run_reach_bench.py, run inside a real Bun
// executable through Bun's preload hook: BUN_OPTIONS="--preload bun_tls_load.js" claude -p
// (stdin /dev/null: claude's own program stops at once with "Input must be provided"; its
// process.exit is made a no-op here, so the process stays alive on this script's socket).
// Environment: AB_PORT (a TLS echo server on 127.0.0.1), AB_ITERS (round trips), AB_SIZE (bytes
// per write).
// Connects, prints "READY <pid>" once the handshake is over and the binary's program has had a
// second to finish, waits for SIGUSR2, then makes AB_ITERS round trips (one write of AB_SIZE
// bytes, then reads until the echo is back) and prints one JSON line with the CPU time per
// round trip; then exits.
const port = Number(process.env.AB_PORT), iters = Number(process.env.AB_ITERS || 20000);
const size = Number(process.env.AB_SIZE || 64);
const msg = Buffer.alloc(size, 120);
const exit = process.exit.bind(process);
process.exit = () => {};
let got = 0, left = 0, onEcho = null;

function start() {
  const c0 = process.cpuUsage(), t0 = performance.now();
  left = iters;
  onEcho = (s) => {
    if (--left > 0) return s.write(msg);
    const secs = (performance.now() - t0) / 1e3, cu = process.cpuUsage(c0);
    const cpu = (cu.user + cu.system) / 1e6;
    process.stdout.write(JSON.stringify({ mode: "bun", pid: process.pid, rounds: iters, seconds: secs, cpu_seconds: cpu,
      cpu_ns_per_call: cpu * 1e9 / iters, ns_per_call: secs * 1e9 / iters }) + "\n", () => exit(0));
  };
  sockRef.write(msg);
}

let sockRef = null;
Bun.connect({
  hostname: "127.0.0.1", port, tls: { rejectUnauthorized: false, serverName: "localhost" },
  socket: {
    open(s) { sockRef = s; s.write(msg); },
    data(s, d) {
      got += d.length;
      while (got >= size) {
        got -= size;
        if (onEcho) onEcho(s);
        else setTimeout(() => {   // the first echo: handshake done
          process.on("SIGUSR2", start);
          process.stdout.write("READY " + process.pid + "\n");
        }, 1000);
      }
    },
    error(s, e) { console.error("tls error", e); exit(1); },
  },
}).catch((e) => { console.error("connect", e); exit(1); });
