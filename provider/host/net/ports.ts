import * as dgram from "node:dgram";
import { setMaxListeners } from "node:events";
import * as net from "node:net";

/**
 * Host ports, seen from the host: whether one is free before QEMU is asked to forward it, and
 * whether something answers on one. QEMU's user networking accepts a connection on a forwarded
 * port before anything listens in the guest, so an accepted connection proves nothing; only
 * bytes coming back do.
 */

export interface HostPortRequest {
    port: number;
    address: string;
    protocol: "tcp" | "udp";
    /** The input field that asked for it, e.g. `vm.portForwards[1].host`, for the error. */
    field: string;
}

/** Why `req` cannot be bound right now, or undefined when it can. */
export async function hostPortProblem(req: HostPortRequest): Promise<string | undefined> {
    const err = await (req.protocol === "tcp" ? tryBindTcp(req.address, req.port) : tryBindUdp(req.address, req.port));
    if (!err) return undefined;
    const where = `${req.address}:${req.port}/${req.protocol}`;
    if (err.code === "EADDRINUSE")
        return `${req.field}: host port ${where} is already in use by another process or VM; choose another port`;
    if (err.code === "EACCES")
        return `${req.field}: host port ${where} needs privileges this user lacks (ports below 1024); choose a port from 1024 up`;
    if (err.code === "EADDRNOTAVAIL") return `${req.field}: host address ${req.address} is not an address of this host`;
    return `${req.field}: host port ${where} cannot be bound: ${err.message}`;
}

/** Throws one error listing every requested port that cannot be bound. */
export async function assertHostPortsFree(reqs: readonly HostPortRequest[]): Promise<void> {
    const problems = (await Promise.all(reqs.map(hostPortProblem))).filter((p): p is string => p !== undefined);
    if (problems.length) throw new Error(problems.join("\n"));
}

function tryBindTcp(address: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
    return new Promise((resolve) => {
        const server = net.createServer();
        server.once("error", (err: NodeJS.ErrnoException) => resolve(err));
        server.listen({ host: address, port, exclusive: true }, () => server.close(() => resolve(undefined)));
    });
}

function tryBindUdp(address: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
    return new Promise((resolve) => {
        const sock = dgram.createSocket("udp4");
        sock.once("error", (err: NodeJS.ErrnoException) => {
            sock.close();
            resolve(err);
        });
        sock.bind({ address, port, exclusive: true }, () => sock.close(() => resolve(undefined)));
    });
}

/** A port the kernel reports free right now (listen on 0, read it, close). Racy by nature: use soon. */
export function pickFreePort(address = "127.0.0.1"): Promise<number> {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.once("error", reject);
        server.listen({ host: address, port: 0, exclusive: true }, () => {
            const port = (server.address() as net.AddressInfo).port;
            server.close(() => resolve(port));
        });
    });
}

/**
 * Whether a TCP service on `address:port` answers within `timeoutMs`. Services that speak
 * first (SSH, SMTP) answer on their own; for the others, after a short pause the probe sends
 * an HTTP/1.0 request, which an HTTP server answers with a status line and most other
 * line-based servers answer with an error — any byte back counts.
 */
export function tcpAnswers(address: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
        let done = false;
        const finish = (answered: boolean) => {
            if (done) return;
            done = true;
            clearTimeout(overall);
            clearTimeout(nudge);
            signal?.removeEventListener("abort", onAbort);
            sock.destroy();
            resolve(answered);
        };
        const onAbort = () => finish(false);
        signal?.addEventListener("abort", onAbort);
        const overall = setTimeout(() => finish(false), timeoutMs);
        let nudge: NodeJS.Timeout | undefined;
        const sock = net.createConnection({ host: address, port });
        sock.on("connect", () => {
            nudge = setTimeout(() => sock.write("GET / HTTP/1.0\r\n\r\n"), Math.min(300, timeoutMs / 3));
        });
        sock.on("data", (d: Buffer) => finish(d.length > 0));
        sock.on("error", () => finish(false));
        sock.on("close", () => finish(false));
        if (signal?.aborted) finish(false);
    });
}

/**
 * Repeated probes of one port that overlap: before the guest's network is up a connection
 * hangs until its timeout, and waiting for it would delay noticing the service by as much.
 * `tick` starts a probe when `intervalMs` has passed since the last one (so at most
 * probeTimeoutMs / intervalMs are open) and tells whether any has been answered; `stop`
 * abandons those still running.
 */
export function portProber(address: string, port: number, opts: { probeTimeoutMs?: number; intervalMs?: number } = {}) {
    const probeTimeoutMs = opts.probeTimeoutMs ?? 5000;
    const intervalMs = opts.intervalMs ?? 250;
    const abort = new AbortController();
    // Each open probe listens on the one signal; their number is bounded by the interval.
    setMaxListeners(Math.ceil(probeTimeoutMs / intervalMs) + 10, abort.signal);
    let answered = false;
    let lastStart = -Infinity;
    return {
        tick(): boolean {
            if (!answered && !abort.signal.aborted && Date.now() - lastStart >= intervalMs) {
                lastStart = Date.now();
                void tcpAnswers(address, port, probeTimeoutMs, abort.signal).then((ok) => {
                    if (ok) answered = true;
                });
            }
            return answered;
        },
        stop(): void {
            abort.abort();
        },
    };
}
