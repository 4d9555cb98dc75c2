import execa from "execa";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, stat, writeFile } from "node:fs/promises";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import * as path from "node:path";

/**
 * Real servers on 127.0.0.1 for the download tests and benchmark: an HTTP (or HTTPS) server that
 * serves files with Range support and can misbehave on purpose (cut a body, send wrong bytes,
 * stall, redirect, refuse), and a proxy that forwards plain requests and tunnels CONNECT. Both
 * record what they were asked, so a test can assert that a resume sent a Range.
 */

export interface Seen {
    method: string;
    url: string;
    range?: string;
    authorization?: string;
}

/** How a path misbehaves. Each applies to requests of that path; `times` limits how often (then it serves normally). */
export type Misbehaviour =
    | { kind: "cut"; afterBytes: number; times?: number }
    | { kind: "wrong"; times?: number }
    | { kind: "stall"; afterBytes: number; times?: number }
    | { kind: "status"; status: number; times?: number }
    | { kind: "redirect"; to: string; status?: number; times?: number }
    | { kind: "noRange"; times?: number };

export interface ImageServer {
    url: string;
    port: number;
    seen: Seen[];
    /** Body bytes sent so far, over every request. */
    bytesSent(): number;
    /** Serve `file` at `urlPath`. */
    serve(urlPath: string, file: string): void;
    misbehave(urlPath: string, m: Misbehaviour): void;
    close(): Promise<void>;
}

export async function startImageServer(tlsOpts?: { key: string; cert: string }): Promise<ImageServer> {
    const files = new Map<string, string>();
    const rules = new Map<string, Misbehaviour & { used: number }>();
    const seen: Seen[] = [];
    const sockets = new Set<net.Socket>();
    let bodyBytes = 0;
    const handler = async (req: http.IncomingMessage, res: http.ServerResponse) => {
        const urlPath = new URL(req.url ?? "/", "http://x").pathname;
        seen.push({
            method: req.method ?? "",
            url: req.url ?? "",
            range: req.headers.range,
            authorization: req.headers.authorization,
        });
        let rule = rules.get(urlPath);
        if (rule && rule.times !== undefined && rule.used >= rule.times) rule = undefined;
        if (rule) rule.used++;
        if (rule?.kind === "status") return void res.writeHead(rule.status).end(`status ${rule.status}\n`);
        if (rule?.kind === "redirect") return void res.writeHead(rule.status ?? 302, { location: rule.to }).end();
        const file = files.get(urlPath);
        if (!file) return void res.writeHead(404).end("not found\n");
        const size = (await stat(file)).size;
        let start = 0;
        const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
        if (m && rule?.kind !== "noRange") {
            start = Number(m[1]);
            if (start >= size) return void res.writeHead(416, { "content-range": `bytes */${size}` }).end();
            res.writeHead(206, {
                "content-length": size - start,
                "content-range": `bytes ${start}-${size - 1}/${size}`,
                "accept-ranges": "bytes",
            });
        } else {
            res.writeHead(200, { "content-length": size, "accept-ranges": "bytes" });
        }
        if (rule?.kind === "wrong") {
            // Same length, other bytes: only the checksum can tell.
            const body = await readFile(file);
            for (let i = 0; i < body.length; i += 4096) body[i] ^= 0xff;
            return void res.end(body.subarray(start));
        }
        const limit = rule?.kind === "cut" || rule?.kind === "stall" ? rule.afterBytes : Infinity;
        let sent = 0;
        const stream = createReadStream(file, { start, highWaterMark: 256 * 1024 });
        stream.on("data", (chunk) => {
            const buf = chunk as Buffer;
            if (sent + buf.length >= limit) {
                const part = buf.subarray(0, Math.max(0, limit - sent));
                stream.destroy();
                bodyBytes += part.length;
                res.write(part, () => {
                    if (rule?.kind === "cut") res.socket?.destroy();
                    // stall: keep the connection open and send nothing more.
                });
                sent += part.length;
                return;
            }
            sent += buf.length;
            bodyBytes += buf.length;
            if (!res.write(buf)) {
                stream.pause();
                res.once("drain", () => stream.resume());
            }
        });
        stream.on("end", () => res.end());
    };
    const server = tlsOpts
        ? https.createServer(tlsOpts, (q, s) => void handler(q, s))
        : http.createServer((q, s) => void handler(q, s));
    server.on("connection", (s: net.Socket) => {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    return {
        url: `${tlsOpts ? "https" : "http"}://127.0.0.1:${port}`,
        port,
        seen,
        bytesSent: () => bodyBytes,
        serve: (p, f) => void files.set(p, f),
        misbehave: (p, m) => void rules.set(p, { ...m, used: 0 }),
        close: () =>
            new Promise((resolve) => {
                for (const s of sockets) s.destroy();
                server.close(() => resolve());
            }),
    };
}

export interface Proxy {
    url: string;
    /** "CONNECT host:port" or "GET http://…" per request. */
    seen: string[];
    close(): Promise<void>;
}

/** A forward proxy: absolute-form GETs are forwarded, CONNECT is tunnelled (as squid or tinyproxy do). */
export async function startProxy(): Promise<Proxy> {
    const seen: string[] = [];
    const sockets = new Set<net.Socket>();
    const server = http.createServer((req, res) => {
        seen.push(`${req.method} ${req.url}`);
        const target = new URL(req.url ?? "");
        const up = http.request(
            {
                host: target.hostname,
                port: target.port,
                path: `${target.pathname}${target.search}`,
                method: req.method,
                headers: req.headers,
            },
            (upRes) => {
                res.writeHead(upRes.statusCode ?? 502, upRes.headers);
                upRes.pipe(res);
            },
        );
        up.on("error", () => res.writeHead(502).end());
        req.pipe(up);
    });
    server.on("connect", (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
        seen.push(`CONNECT ${req.url}`);
        const [host, port] = (req.url ?? "").split(":");
        const upstream = net.connect(Number(port), host, () => {
            client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
            upstream.write(head);
            upstream.pipe(client);
            client.pipe(upstream);
        });
        upstream.on("error", () => client.destroy());
        client.on("error", () => upstream.destroy());
    });
    server.on("connection", (s: net.Socket) => {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    return {
        url: `http://127.0.0.1:${port}`,
        seen,
        close: () =>
            new Promise((resolve) => {
                for (const s of sockets) s.destroy();
                server.close(() => resolve());
            }),
    };
}

/** A self-signed certificate for 127.0.0.1, made by openssl into `dir`. */
export async function selfSignedCert(dir: string): Promise<{ key: string; cert: string }> {
    const key = path.join(dir, "key.pem");
    const cert = path.join(dir, "cert.pem");
    await execa("openssl", [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ]);
    return { key: await readFile(key, "utf8"), cert: await readFile(cert, "utf8") };
}

export async function fileDigest(file: string, algorithm: "sha256" | "sha512"): Promise<string> {
    const h = createHash(algorithm);
    for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
    return h.digest("hex");
}

/** Writes SHA256SUMS and SHA512SUMS (GNU layout, as Debian's cloud directory has) for `files` into `dir`. */
export async function writeSums(dir: string, files: string[]): Promise<void> {
    for (const algorithm of ["sha256", "sha512"] as const) {
        const lines = await Promise.all(
            files.map(async (f) => `${await fileDigest(f, algorithm)}  ${path.basename(f)}`),
        );
        await writeFile(path.join(dir, `${algorithm.toUpperCase()}SUMS`), lines.join("\n") + "\n");
    }
}

/** Whether two files hold the same bytes (Buffer.equals: jest's deep equality walks a Buffer byte by byte). */
export async function sameBytes(a: string, b: string): Promise<boolean> {
    const [x, y] = await Promise.all([readFile(a), readFile(b)]);
    return x.equals(y);
}
