import * as net from "node:net";

/**
 * A small client for QEMU's machine protocol: newline-delimited JSON over a unix socket. QEMU
 * sends a greeting, refuses everything but `qmp_capabilities` until it is negotiated, and may
 * send asynchronous events (SHUTDOWN, POWERDOWN, …) between a command and its reply — so replies
 * are matched to commands by `id`, never by order.
 */

export interface QmpEvent {
    event: string;
    data?: unknown;
    timestamp?: { seconds: number; microseconds: number };
}

export interface QmpOptions {
    /** Bound on connecting, the greeting and capability negotiation together. */
    connectTimeoutMs?: number;
    /** Default bound on each command; a command may pass its own. */
    commandTimeoutMs?: number;
}

/** QEMU answered a command with an error object: `class` is QEMU's error class, e.g. CommandNotFound. */
export class QmpCommandError extends Error {
    constructor(
        readonly command: string,
        readonly errorClass: string,
        readonly desc: string,
    ) {
        super(`QMP ${command} failed: ${errorClass}: ${desc}`);
        this.name = "QmpCommandError";
    }
}

interface Pending {
    command: string;
    resolve(value: unknown): void;
    reject(err: Error): void;
    timer: NodeJS.Timeout;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const DEFAULT_COMMAND_TIMEOUT_MS = 10000;

export class QmpClient {
    private buffer = "";
    private nextId = 1;
    private readonly pending = new Map<string, Pending>();
    private readonly eventWaiters = new Set<(ev: QmpEvent) => void>();
    private closedError: Error | undefined;
    private readonly closeWaiters: Array<() => void> = [];
    /** Every event received so far, so a caller that asks late still sees an event that came early. */
    readonly events: QmpEvent[] = [];
    greeting: unknown;

    private constructor(
        private readonly socket: net.Socket,
        private readonly commandTimeoutMs: number,
    ) {}

    /** Connects, reads the greeting and negotiates capabilities; rejects within the connect timeout. */
    static async connect(socketPath: string, opts: QmpOptions = {}): Promise<QmpClient> {
        const connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
        const socket = net.createConnection({ path: socketPath });
        const client = new QmpClient(socket, opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
        const greeting = new Promise<unknown>((resolve, reject) => {
            client.onGreeting = resolve;
            client.onEarlyFailure = reject;
        });
        socket.setEncoding("utf8");
        socket.on("data", (chunk: string) => client.receive(chunk));
        socket.on("error", (err) => client.fail(new Error(`QMP socket ${socketPath}: ${err.message}`)));
        socket.on("close", () => client.fail(new Error(`QMP connection to ${socketPath} closed`)));
        try {
            client.greeting = await withTimeout(greeting, connectTimeoutMs, `QMP greeting from ${socketPath}`);
            await client.execute("qmp_capabilities", undefined, { timeoutMs: connectTimeoutMs });
            return client;
        } catch (err) {
            client.close();
            throw err;
        }
    }

    private onGreeting: ((g: unknown) => void) | undefined;
    private onEarlyFailure: ((err: Error) => void) | undefined;

    /** Sends one command and resolves with its `return` value. */
    execute(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<unknown> {
        if (this.closedError) return Promise.reject(this.closedError);
        const id = `pq-${this.nextId++}`;
        const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new Error(`QMP ${command} got no reply within ${timeoutMs} ms`));
            }, timeoutMs);
            this.pending.set(id, { command, resolve, reject, timer });
            const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
            this.socket.write(JSON.stringify(message) + "\n");
        });
    }

    /** Resolves with the first event named `name` (including one already received), or rejects on timeout or close. */
    waitForEvent(name: string, timeoutMs: number): Promise<QmpEvent> {
        const seen = this.events.find((e) => e.event === name);
        if (seen) return Promise.resolve(seen);
        if (this.closedError) return Promise.reject(this.closedError);
        return new Promise((resolve, reject) => {
            const waiter = (ev: QmpEvent) => {
                if (ev.event !== name) return;
                finish();
                resolve(ev);
            };
            const onClose = () => {
                finish();
                reject(this.closedError ?? new Error("QMP connection closed"));
            };
            const timer = setTimeout(() => {
                finish();
                reject(new Error(`no QMP ${name} event within ${timeoutMs} ms`));
            }, timeoutMs);
            const finish = () => {
                clearTimeout(timer);
                this.eventWaiters.delete(waiter);
                const i = this.closeWaiters.indexOf(onClose);
                if (i >= 0) this.closeWaiters.splice(i, 1);
            };
            this.eventWaiters.add(waiter);
            this.closeWaiters.push(onClose);
        });
    }

    /** Resolves when QEMU closes the connection (as it does on exit), or rejects after `timeoutMs`. */
    waitForClose(timeoutMs: number): Promise<void> {
        if (this.closedError) return Promise.resolve();
        return withTimeout(
            new Promise<void>((resolve) => this.closeWaiters.push(resolve)),
            timeoutMs,
            "QMP connection close",
        );
    }

    get isClosed(): boolean {
        return this.closedError !== undefined;
    }

    close(): void {
        this.socket.destroy();
        this.fail(new Error("QMP connection closed by the client"));
    }

    private receive(chunk: string): void {
        this.buffer += chunk;
        let nl: number;
        while ((nl = this.buffer.indexOf("\n")) >= 0) {
            const line = this.buffer.slice(0, nl).trim();
            this.buffer = this.buffer.slice(nl + 1);
            if (line) this.dispatch(line);
        }
    }

    private dispatch(line: string): void {
        let msg: Record<string, unknown>;
        try {
            msg = JSON.parse(line);
        } catch {
            this.fail(new Error(`QMP sent a line that is not JSON: ${line.slice(0, 200)}`));
            this.socket.destroy();
            return;
        }
        if ("QMP" in msg) {
            this.onGreeting?.(msg.QMP);
            this.onGreeting = undefined;
            return;
        }
        if (typeof msg.event === "string") {
            const ev = msg as unknown as QmpEvent;
            this.events.push(ev);
            for (const w of [...this.eventWaiters]) w(ev);
            return;
        }
        const id = typeof msg.id === "string" ? msg.id : undefined;
        const p = id === undefined ? undefined : this.pending.get(id);
        // A reply without our id (QEMU answers unparseable input with an id-less error) cannot be matched; drop it.
        if (!p || id === undefined) return;
        this.pending.delete(id);
        clearTimeout(p.timer);
        if ("return" in msg) p.resolve(msg.return);
        else {
            const e = (msg.error ?? {}) as { class?: string; desc?: string };
            p.reject(new QmpCommandError(p.command, e.class ?? "GenericError", e.desc ?? JSON.stringify(msg)));
        }
    }

    private fail(err: Error): void {
        if (this.closedError) return;
        this.closedError = err;
        this.onEarlyFailure?.(err);
        this.onEarlyFailure = undefined;
        for (const [id, p] of this.pending) {
            clearTimeout(p.timer);
            p.reject(new Error(`QMP ${p.command} got no reply: ${err.message}`));
            this.pending.delete(id);
        }
        for (const w of this.closeWaiters.splice(0)) w();
        this.socket.destroy();
    }
}

export type RunState =
    | "running"
    | "paused"
    | "shutdown"
    | "inmigrate"
    | "postmigrate"
    | "prelaunch"
    | "finish-migrate"
    | "restore-vm"
    | "suspended"
    | "watchdog"
    | "guest-panicked"
    | "io-error"
    | "internal-error"
    | "colo"
    | "save-vm"
    | "debug";

/** `query-status`: whether the guest CPUs run, and QEMU's run state. */
export async function queryStatus(
    client: QmpClient,
    timeoutMs?: number,
): Promise<{ running: boolean; status: RunState }> {
    const r = (await client.execute("query-status", undefined, { timeoutMs })) as {
        running: boolean;
        status: RunState;
    };
    return { running: r.running, status: r.status };
}

/**
 * QEMU serves one QMP client at a time and listens with a backlog of one: when many refreshes
 * ask at once, a connect fails at once with EAGAIN rather than waiting its turn. So a session
 * is opened with retries until the deadline, and this process's own callers queue per socket
 * instead of crowding each other out.
 */
const queues = new Map<string, Promise<unknown>>();

export async function withQmp<T>(
    socketPath: string,
    timeoutMs: number,
    use: (client: QmpClient) => Promise<T>,
): Promise<T> {
    const previous = queues.get(socketPath) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => session(socketPath, timeoutMs, use));
    queues.set(socketPath, run);
    try {
        return await run;
    } finally {
        if (queues.get(socketPath) === run) queues.delete(socketPath);
    }
}

async function session<T>(socketPath: string, timeoutMs: number, use: (client: QmpClient) => Promise<T>): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let client: QmpClient | undefined;
    for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
        try {
            client = await QmpClient.connect(socketPath, {
                connectTimeoutMs: Math.max(100, deadline - Date.now()),
                commandTimeoutMs: Math.max(100, deadline - Date.now()),
            });
            break;
        } catch (err) {
            const busy = /EAGAIN|ECONNREFUSED|closed/.test((err as Error).message);
            if (!busy || Date.now() + delay >= deadline) throw err;
            await new Promise((r) => setTimeout(r, delay));
        }
    }
    try {
        return await use(client);
    } finally {
        client.close();
    }
}

/** One command on a fresh connection, closed afterwards: for callers that only need one answer. */
export async function qmpOnce(
    socketPath: string,
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = 5000,
): Promise<unknown> {
    const client = await QmpClient.connect(socketPath, { connectTimeoutMs: timeoutMs, commandTimeoutMs: timeoutMs });
    try {
        return await client.execute(command, args);
    } finally {
        client.close();
    }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
        p.then(
            (v) => {
                clearTimeout(timer);
                resolve(v);
            },
            (e) => {
                clearTimeout(timer);
                reject(e);
            },
        );
    });
}
