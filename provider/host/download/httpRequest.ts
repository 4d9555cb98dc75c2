import * as http from "node:http";
import * as https from "node:https";
import type { Socket } from "node:net";
import * as tls from "node:tls";
import { hasCredentials, proxyFor, redactUrl } from "../../core/imageUrl";
import { DownloadError } from "./downloadError";

/**
 * One GET over HTTP(S), as curl would make it: through the proxy the environment names
 * (CONNECT for https, absolute-form requests for http), following redirects up to a bound, with
 * the URL's user and password sent as Basic authentication to its own origin only. Node 20's
 * http has no proxy support of its own, hence the tunnel here. Every step has a deadline: no
 * answer (connect, TLS, headers) within `stallMs` is a stall.
 */

export interface RequestOptions {
    headers?: Record<string, string>;
    /** No progress (connection, headers) for this long fails the request. */
    stallMs: number;
    maxRedirects: number;
    env: NodeJS.ProcessEnv;
    /** Extra trusted CA certificates (PEM), beside the system's and NODE_EXTRA_CA_CERTS. */
    ca?: string | Buffer;
}

export interface Response {
    res: http.IncomingMessage;
    /** Where the body came from after redirects (the full URL, for another request). */
    finalUrl: URL;
    /** Stops the request and frees its socket. */
    abort(): void;
}

/** TLS and connection errors as Node names them; each gets its own hint. */
const TLS_CODES = /^(CERT_|ERR_TLS_|ERR_SSL_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|HOSTNAME_MISMATCH|ERR_OSSL)/;

export async function get(url: URL, opts: RequestOptions): Promise<Response> {
    let current = url;
    // Credentials go to the origin the user named, never to one a redirect points at.
    const origin = url.origin;
    for (let hop = 0; ; hop++) {
        const auth = current.origin === origin && hasCredentials(url) ? basicAuth(url) : undefined;
        const r = await once(current, {
            ...opts,
            headers: { ...opts.headers, ...(auth ? { authorization: auth } : {}) },
        });
        const status = r.res.statusCode ?? 0;
        if (status < 300 || status >= 400 || status === 304) return { ...r, finalUrl: current };
        const location = r.res.headers.location;
        r.abort();
        if (!location) {
            throw new DownloadError(
                "http-status",
                redactUrl(url),
                `${redactUrl(current)} answered ${status} without a Location to go to; the server is misconfigured, or the URL is wrong`,
                status,
            );
        }
        if (hop + 1 > opts.maxRedirects) {
            throw new DownloadError(
                "redirects",
                redactUrl(url),
                `${redactUrl(url)} redirected more than ${opts.maxRedirects} times (last to ${redactUrl(new URL(location, current))}); it may loop: open it in a browser or with curl -L to see where it leads`,
            );
        }
        const next = new URL(location, current);
        if (next.protocol !== "https:" && next.protocol !== "http:") {
            throw new DownloadError(
                "redirects",
                redactUrl(url),
                `${redactUrl(url)} redirected to ${next.protocol} (${redactUrl(next)}), which is not followed`,
            );
        }
        if (current.protocol === "https:" && next.protocol === "http:") {
            throw new DownloadError(
                "redirects",
                redactUrl(url),
                `${redactUrl(url)} redirected from https to plain http (${redactUrl(next)}); refused, since that drops the transport's protection. Use the http URL directly if you mean it`,
            );
        }
        current = next;
    }
}

function basicAuth(url: URL): string {
    return `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString("base64")}`;
}

/** The path and query as sent: credentials live only in the Authorization header. */
function requestTarget(url: URL): string {
    return `${url.pathname}${url.search}`;
}

async function once(url: URL, opts: RequestOptions): Promise<Omit<Response, "finalUrl">> {
    const proxy = proxyFor(url, opts.env);
    const headers = { "user-agent": "pulumi-qemu", accept: "*/*", ...opts.headers };
    const shown = redactUrl(url);
    return new Promise((resolve, reject) => {
        let req: http.ClientRequest | undefined;
        let settled = false;
        const fail = (err: unknown) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            req?.destroy();
            reject(explain(err, shown, proxy));
        };
        const timer = setTimeout(
            () =>
                fail(
                    new DownloadError(
                        "stall",
                        shown,
                        `${shown} did not answer within ${opts.stallMs / 1000} s${proxy ? ` (through proxy ${redactUrl(proxy)})` : ""}; check the host is reachable, or raise source.stallSeconds`,
                    ),
                ),
            opts.stallMs,
        );
        const start = (socket?: Socket) => {
            const common = {
                method: "GET",
                headers,
                agent: false as const,
                ca: opts.ca ? [...tls.rootCertificates, String(opts.ca)] : undefined,
            };
            if (url.protocol === "https:") {
                // Through a tunnel the TLS session runs over the proxy's socket, still verified against the URL's host.
                req = https.request({
                    ...common,
                    host: url.hostname,
                    port: url.port || 443,
                    path: requestTarget(url),
                    servername: tlsName(url),
                    ...(socket
                        ? { createConnection: () => tls.connect({ socket, servername: tlsName(url), ca: common.ca }) }
                        : {}),
                });
            } else if (proxy) {
                req = http.request({
                    ...common,
                    host: proxy.hostname,
                    port: proxy.port || 80,
                    path: `${url.protocol}//${url.host}${requestTarget(url)}`,
                    headers: { ...headers, host: url.host, ...proxyAuth(proxy) },
                });
            } else {
                req = http.request({ ...common, host: url.hostname, port: url.port || 80, path: requestTarget(url) });
            }
            req.on("error", fail);
            req.on("response", (res) => {
                if (settled) return res.destroy();
                settled = true;
                clearTimeout(timer);
                const r = req!;
                resolve({ res, abort: () => r.destroy() });
            });
            req.end();
        };
        if (url.protocol === "https:" && proxy) {
            const connect = http.request({
                host: proxy.hostname,
                port: proxy.port || 80,
                method: "CONNECT",
                path: `${url.hostname}:${url.port || 443}`,
                agent: false,
                headers: { host: `${url.hostname}:${url.port || 443}`, ...proxyAuth(proxy) },
            });
            req = connect;
            connect.on("error", fail);
            connect.on("connect", (res, socket) => {
                if (res.statusCode !== 200) {
                    socket.destroy();
                    return fail(
                        new DownloadError(
                            "connect",
                            shown,
                            `proxy ${redactUrl(proxy)} refused to connect to ${url.host} (${res.statusCode} ${res.statusMessage ?? ""}); check https_proxy / no_proxy`,
                            res.statusCode,
                        ),
                    );
                }
                start(socket);
            });
            connect.end();
        } else {
            start();
        }
    });
}

function tlsName(url: URL): string | undefined {
    // SNI carries names only, never addresses.
    return /^[\d.]+$|:/.test(url.hostname) ? undefined : url.hostname;
}

function proxyAuth(proxy: URL): Record<string, string> {
    return hasCredentials(proxy) ? { "proxy-authorization": basicAuth(proxy) } : {};
}

/** Node's connection and TLS errors, said with the URL and what to do. */
export function explain(err: unknown, shown: string, proxy?: URL): unknown {
    if (err instanceof DownloadError) return err;
    const e = err as NodeJS.ErrnoException;
    const code = e?.code ?? "";
    const via = proxy ? ` through proxy ${redactUrl(proxy)}` : "";
    if (TLS_CODES.test(code) || /certificate|ssl|tls/i.test(e?.message ?? "")) {
        return new DownloadError(
            "tls",
            shown,
            `TLS failed for ${shown}${via}: ${e.message} (${code}); the server's certificate is not trusted here. If it is signed by your own CA, give its PEM file in NODE_EXTRA_CA_CERTS; check the host name and the clock`,
        );
    }
    if (
        code === "ECONNREFUSED" ||
        code === "ENOTFOUND" ||
        code === "EAI_AGAIN" ||
        code === "EHOSTUNREACH" ||
        code === "ENETUNREACH"
    ) {
        return new DownloadError(
            "connect",
            shown,
            `cannot reach ${shown}${via} (${code}); check the URL, the network and https_proxy / http_proxy / no_proxy`,
        );
    }
    if (code === "ECONNRESET" || code === "EPIPE" || code === "ERR_STREAM_PREMATURE_CLOSE") {
        return new DownloadError("cut", shown, `the connection to ${shown}${via} was cut (${code}); try again`);
    }
    return new DownloadError("connect", shown, `requesting ${shown}${via} failed: ${e?.message ?? String(err)}`);
}
