import * as http from "node:http";
import * as net from "node:net";
import { readFileSync } from "node:fs";

/** A TCP port nobody listens on right now, chosen by the kernel. */
export async function freePort(): Promise<number> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as net.AddressInfo;
    await new Promise((resolve) => server.close(resolve));
    return port;
}

/** One GET with a short timeout; rejects on any error. */
export function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
        const req = http.get(url, { timeout: timeoutMs }, (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (chunk) => (body += chunk));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on("timeout", () => req.destroy(new Error(`GET ${url} timed out after ${timeoutMs} ms`)));
        req.on("error", reject);
    });
}

/**
 * GETs until the guest answers. User-mode networking accepts a connection before anything
 * listens in the guest, so only an HTTP answer proves the service is up.
 */
export async function httpGetWhenUp(url: string, deadlineMs: number): Promise<{ status: number; body: string }> {
    const until = Date.now() + deadlineMs;
    let last: unknown;
    while (Date.now() < until) {
        try {
            return await httpGet(url);
        } catch (e) {
            last = e;
            await new Promise((r) => setTimeout(r, 250));
        }
    }
    throw new Error(`no HTTP answer from ${url} within ${deadlineMs} ms: ${String(last)}`);
}

/** The IPv4 addresses on which some process listens on TCP `port`, read from /proc/net/tcp. */
export function tcpListenAddresses(port: number): string[] {
    const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
    return readFileSync("/proc/net/tcp", "utf8")
        .split("\n")
        .slice(1)
        .map((line) => line.trim().split(/\s+/))
        .filter((f) => f.length > 3 && f[3] === "0A" && f[1].endsWith(`:${hexPort}`))
        .map((f) => {
            const hex = f[1].split(":")[0];
            return [3, 2, 1, 0].map((i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join(".");
        });
}
