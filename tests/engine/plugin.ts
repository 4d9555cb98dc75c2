import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as provrpc from "@pulumi/pulumi/proto/provider_grpc_pb";
import * as provproto from "@pulumi/pulumi/proto/provider_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";

/**
 * A provider plugin process, driven over gRPC the way the engine drives it. Property bags are
 * plain JSON objects here; secrets and unknowns travel in their wire forms (see runtime/rpc).
 */

import type { Props } from "./wire";
import { MAIN_ROOT } from "./paths";
export type { Props };

export interface CheckResult {
    inputs: Props;
    failures: { property: string; reason: string }[];
}

export interface DiffResult {
    /** DiffResponse.DiffChanges: 0 unknown, 1 none, 2 some. */
    changes: number;
    replaces: string[];
    deleteBeforeReplace: boolean;
}

export interface ConfigureResult {
    acceptSecrets: boolean;
    acceptResources: boolean;
    supportsPreview: boolean;
}

export interface PluginClient {
    readonly name: string;
    readonly port: number;
    /** Everything the plugin wrote to stderr so far. */
    stderr(): string;
    configure(args?: Props): Promise<ConfigureResult>;
    check(urn: string, olds: Props, news: Props): Promise<CheckResult>;
    /** The provider's own configuration, as the engine checks and compares it for a provider resource. */
    checkConfig(urn: string, olds: Props, news: Props): Promise<CheckResult>;
    diffConfig(urn: string, olds: Props, news: Props): Promise<DiffResult>;
    diff(id: string, urn: string, olds: Props, news: Props, oldInputs?: Props): Promise<DiffResult>;
    /** `timeoutSeconds`: the request's timeout, as the engine sets it from customTimeouts. */
    create(
        urn: string,
        properties: Props,
        opts?: { preview?: boolean; timeoutSeconds?: number },
    ): Promise<{ id: string; properties: Props }>;
    read(
        id: string,
        urn: string,
        properties: Props,
        inputs?: Props,
    ): Promise<{ id: string; properties: Props; inputs?: Props }>;
    update(id: string, urn: string, olds: Props, news: Props, oldInputs?: Props): Promise<{ properties: Props }>;
    delete(id: string, urn: string, properties: Props, oldInputs?: Props): Promise<void>;
    getSchema(): Promise<string>;
    close(): Promise<void>;
}

export interface PluginOptions {
    cwd?: string;
    env?: NodeJS.ProcessEnv;
    /** Deadline of each call; a VM's create waits for its guest to boot. */
    callTimeoutMs?: number;
    /** How long to wait for the port line. */
    startTimeoutMs?: number;
}

/** `node <@pulumi/pulumi>/cmd/dynamic-provider <engine>`, as the engine starts it for `pulumi-nodejs`. */
export function startDynamicPlugin(
    engineAddress: string,
    opts: PluginOptions & { project?: string } = {},
): Promise<PluginClient> {
    const entry = require.resolve("@pulumi/pulumi/cmd/dynamic-provider");
    const env = {
        ...opts.env,
        ...(opts.project ? { PULUMI_NODEJS_PROJECT: opts.project, PULUMI_PROJECT: opts.project } : {}),
    };
    return startPlugin("pulumi-nodejs", process.execPath, [entry, engineAddress], { ...opts, env });
}

/** Our own plugin, compiled: `node bin/provider/plugin/main.js <engine>`. */
export function startQemuPlugin(engineAddress: string, opts: PluginOptions = {}): Promise<PluginClient> {
    const entry = path.join(MAIN_ROOT, "bin", "provider", "plugin", "main.js");
    return startPlugin("qemu", process.execPath, [entry, engineAddress], opts);
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
    for (const child of live) child.kill("SIGKILL");
});

export async function startPlugin(
    name: string,
    command: string,
    args: string[],
    opts: PluginOptions = {},
): Promise<PluginClient> {
    const child = spawn(command, args, {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env },
        stdio: ["ignore", "pipe", "pipe"],
    });
    live.add(child);
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    let port: number;
    try {
        port = await readPort(child, opts.startTimeoutMs ?? 30_000, () => stderr);
    } catch (err) {
        await kill(child, exited);
        throw err;
    }
    const client = new provrpc.ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const timeout = opts.callTimeoutMs ?? 300_000;
    const call = <Req, Res>(method: string, request: Req): Promise<Res> =>
        new Promise((resolve, reject) => {
            const deadline = new Date(Date.now() + timeout);
            (client as any)[method](
                request,
                new grpc.Metadata(),
                { deadline },
                (err: grpc.ServiceError | null, res: Res) => {
                    if (err) reject(new Error(`${name} ${method}: ${err.details || err.message}${stderrTail(stderr)}`));
                    else resolve(res);
                },
            );
        });

    return {
        name,
        port,
        stderr: () => stderr,
        async configure(argsBag = {}) {
            const req = new provproto.ConfigureRequest()
                .setArgs(Struct.fromJavaScript(argsBag as any))
                .setAcceptsecrets(true)
                .setAcceptresources(true);
            const res = await call<provproto.ConfigureRequest, provproto.ConfigureResponse>("configure", req);
            return {
                acceptSecrets: res.getAcceptsecrets(),
                acceptResources: res.getAcceptresources(),
                supportsPreview: res.getSupportspreview(),
            };
        },
        async checkConfig(urn, olds, news) {
            const req = new provproto.CheckRequest()
                .setUrn(urn)
                .setOlds(toStruct(olds))
                .setNews(toStruct(news))
                .setName(nameOf(urn))
                .setType(typeOf(urn));
            const res = await call<provproto.CheckRequest, provproto.CheckResponse>("checkConfig", req);
            return {
                inputs: fromStruct(res.getInputs()),
                failures: res.getFailuresList().map((f) => ({ property: f.getProperty(), reason: f.getReason() })),
            };
        },
        async diffConfig(urn, olds, news) {
            const req = new provproto.DiffRequest()
                .setUrn(urn)
                .setOlds(toStruct(olds))
                .setNews(toStruct(news))
                .setName(nameOf(urn))
                .setType(typeOf(urn));
            const res = await call<provproto.DiffRequest, provproto.DiffResponse>("diffConfig", req);
            return {
                changes: res.getChanges(),
                replaces: res.getReplacesList(),
                deleteBeforeReplace: res.getDeletebeforereplace(),
            };
        },
        async check(urn, olds, news) {
            const req = new provproto.CheckRequest()
                .setUrn(urn)
                .setOlds(toStruct(olds))
                .setNews(toStruct(news))
                .setName(nameOf(urn))
                .setType(typeOf(urn));
            const res = await call<provproto.CheckRequest, provproto.CheckResponse>("check", req);
            return {
                inputs: fromStruct(res.getInputs()),
                failures: res.getFailuresList().map((f) => ({ property: f.getProperty(), reason: f.getReason() })),
            };
        },
        async diff(id, urn, olds, news, oldInputs) {
            const req = new provproto.DiffRequest()
                .setId(id)
                .setUrn(urn)
                .setOlds(toStruct(olds))
                .setNews(toStruct(news))
                .setName(nameOf(urn))
                .setType(typeOf(urn));
            if (oldInputs) req.setOldInputs(toStruct(oldInputs));
            const res = await call<provproto.DiffRequest, provproto.DiffResponse>("diff", req);
            return {
                changes: res.getChanges(),
                replaces: res.getReplacesList(),
                deleteBeforeReplace: res.getDeletebeforereplace(),
            };
        },
        async create(urn, properties, createOpts = {}) {
            const req = new provproto.CreateRequest()
                .setUrn(urn)
                .setProperties(toStruct(properties))
                .setPreview(!!createOpts.preview)
                .setTimeout(createOpts.timeoutSeconds ?? 0)
                .setName(nameOf(urn))
                .setType(typeOf(urn));
            const res = await call<provproto.CreateRequest, provproto.CreateResponse>("create", req);
            return { id: res.getId(), properties: fromStruct(res.getProperties()) };
        },
        async read(id, urn, properties, inputs) {
            const req = new provproto.ReadRequest()
                .setId(id)
                .setUrn(urn)
                .setProperties(toStruct(properties))
                .setName(nameOf(urn))
                .setType(typeOf(urn));
            if (inputs) req.setInputs(toStruct(inputs));
            const res = await call<provproto.ReadRequest, provproto.ReadResponse>("read", req);
            return {
                id: res.getId(),
                properties: fromStruct(res.getProperties()),
                ...(res.hasInputs() ? { inputs: fromStruct(res.getInputs()) } : {}),
            };
        },
        async update(id, urn, olds, news, oldInputs) {
            const req = new provproto.UpdateRequest()
                .setId(id)
                .setUrn(urn)
                .setOlds(toStruct(olds))
                .setNews(toStruct(news))
                .setName(nameOf(urn))
                .setType(typeOf(urn));
            if (oldInputs) req.setOldInputs(toStruct(oldInputs));
            const res = await call<provproto.UpdateRequest, provproto.UpdateResponse>("update", req);
            return { properties: fromStruct(res.getProperties()) };
        },
        async delete(id, urn, properties, oldInputs) {
            const req = new provproto.DeleteRequest()
                .setId(id)
                .setUrn(urn)
                .setProperties(toStruct(properties))
                .setName(nameOf(urn))
                .setType(typeOf(urn));
            if (oldInputs) req.setOldInputs(toStruct(oldInputs));
            await call("delete", req);
        },
        async getSchema() {
            const res = await call<provproto.GetSchemaRequest, provproto.GetSchemaResponse>(
                "getSchema",
                new provproto.GetSchemaRequest(),
            );
            return res.getSchema();
        },
        async close() {
            client.close();
            await kill(child, exited);
            live.delete(child);
        },
    };
}

export function toStruct(value: Props): Struct {
    return Struct.fromJavaScript(value as any);
}

export function fromStruct(value: Struct | undefined): Props {
    return value ? (value.toJavaScript() as Props) : {};
}

/** `urn:pulumi:stack::project::qualified$type::name` → name. */
export function nameOf(urn: string): string {
    return urn.split("::").slice(3).join("::");
}

export function typeOf(urn: string): string {
    const qualified = urn.split("::")[2] ?? "";
    return qualified.slice(qualified.lastIndexOf("$") + 1);
}

function readPort(child: ChildProcess, timeoutMs: number, stderr: () => string): Promise<number> {
    return new Promise((resolve, reject) => {
        let out = "";
        const fail = (why: string) => {
            cleanup();
            reject(new Error(`plugin ${why}${stderrTail(stderr())}`));
        };
        const onData = (d: Buffer) => {
            out += d.toString("utf8");
            const nl = out.indexOf("\n");
            if (nl < 0) return;
            const line = out.slice(0, nl).trim();
            cleanup();
            // The rest of stdout must keep draining, or a chatty plugin blocks on a full pipe.
            child.stdout!.resume();
            if (/^\d+$/.test(line)) resolve(Number(line));
            else
                reject(
                    new Error(
                        `plugin's first stdout line is not a port: ${JSON.stringify(line)}${stderrTail(stderr())}`,
                    ),
                );
        };
        const onExit = (code: number | null, signal: string | null) =>
            fail(`exited (code ${code}, signal ${signal}) before printing its port`);
        const timer = setTimeout(() => fail(`printed no port within ${timeoutMs} ms`), timeoutMs);
        const cleanup = () => {
            clearTimeout(timer);
            child.stdout!.off("data", onData);
            child.off("exit", onExit);
        };
        child.stdout!.on("data", onData);
        child.once("exit", onExit);
    });
}

async function kill(child: ChildProcess, exited: Promise<void>): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
}

function stderrTail(stderr: string): string {
    const tail = stderr.trim().slice(-2000);
    return tail ? `\n--- plugin stderr ---\n${tail}` : "";
}
