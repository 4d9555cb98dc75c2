import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, rename, writeFile } from "node:fs/promises";
import * as grpc from "@grpc/grpc-js";
import * as resrpc from "@pulumi/pulumi/proto/resource_grpc_pb";
import * as resproto from "@pulumi/pulumi/proto/resource_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { parseTimeout } from "../../provider/host/callDeadline";
import { startEngineServer, type EngineServer, type LogEntry } from "./engineServer";
import { grpcError, listenOnFreePort, shutdownServer } from "./grpc";
import { startDynamicPlugin, type PluginClient } from "./plugin";
import { deepEqual, forProvider, fromProvider, type Props } from "./wire";

/**
 * A small deployment engine: it runs a Pulumi program against its own ResourceMonitor, turns each
 * registration into the steps the real engine would take (check, diff, create, update, replace,
 * same) against the provider plugins, keeps the state between runs in a JSON file, and deletes
 * what a program no longer declares. What it leaves out: aliases, imports, protect, ignoreChanges,
 * component providers, and replacing the dependents of a delete-before-replace resource.
 */

export interface ResourceState {
    urn: string;
    type: string;
    custom: boolean;
    id: string;
    parent: string;
    /** Checked inputs, in wire form (secrets tagged). */
    inputs: Props;
    outputs: Props;
    dependencies: string[];
    /** The old half of a create-before-delete replacement whose delete has not happened yet. */
    pendingDelete?: boolean;
}

export interface StackState {
    resources: ResourceState[];
}

export type Op = "create" | "update" | "replace" | "delete" | "same";

export interface Step {
    op: Op;
    urn: string;
    /** Why: the properties a diff named, or the failure of a refresh read. */
    detail?: string;
}

export interface RunSummary {
    kind: "up" | "preview" | "destroy" | "refresh";
    counts: Record<Op, number>;
    steps: Step[];
    /** The stack's outputs in wire form (secrets tagged, unknowns as the magic string). */
    outputs: Props;
    seconds: number;
    /** Everything plugins and the program logged to the engine. */
    logs: LogEntry[];
    programOutput: string;
}

export interface ProjectOptions {
    /** The program's directory: compiled JS, with node_modules resolving @pulumi/pulumi and its packages. */
    dir: string;
    project: string;
    stack: string;
    statePath: string;
    /** Stack config by key ("project:key" or bare "key", which gets the project's namespace). */
    config?: Record<string, unknown>;
    /** Config keys whose values are secret. */
    secretConfig?: string[];
    /** Providers other than the dynamic one, by package name (the type token's first part). */
    plugins?: Record<string, (engineAddress: string) => Promise<PluginClient>>;
    /** Extra environment for the program and the plugins (e.g. PULUMI_QEMU_STATE_DIR). */
    env?: NodeJS.ProcessEnv;
    /** Copy program and engine logs to this process's stderr as they come. */
    echo?: boolean;
    /** Kill a program that runs longer than this. */
    programTimeoutMs?: number;
}

const STACK_TYPE = "pulumi:pulumi:Stack";

export function up(opts: ProjectOptions): Promise<RunSummary> {
    return deploy(opts, false);
}

export function preview(opts: ProjectOptions): Promise<RunSummary> {
    return deploy(opts, true);
}

export async function loadState(statePath: string): Promise<StackState> {
    if (!existsSync(statePath)) return { resources: [] };
    return JSON.parse(await readFile(statePath, "utf8")) as StackState;
}

async function saveState(statePath: string, state: StackState): Promise<void> {
    const tmp = `${statePath}.tmp`;
    await writeFile(tmp, JSON.stringify(state, null, 2));
    await rename(tmp, statePath);
}

function emptyCounts(): Record<Op, number> {
    return { create: 0, update: 0, replace: 0, delete: 0, same: 0 };
}

/** The engine side every run needs: the Engine service and lazily started, configured plugins. */
class Session {
    readonly steps: Step[] = [];
    private readonly plugins = new Map<string, Promise<{ client: PluginClient; acceptSecrets: boolean }>>();

    private constructor(
        readonly engine: EngineServer,
        private readonly opts: ProjectOptions,
    ) {}

    static async open(opts: ProjectOptions): Promise<Session> {
        return new Session(await startEngineServer({ echo: opts.echo }), opts);
    }

    record(op: Op, urn: string, detail?: string): void {
        this.steps.push({ op, urn, ...(detail ? { detail } : {}) });
    }

    counts(): Record<Op, number> {
        const counts = emptyCounts();
        for (const s of this.steps) counts[s.op]++;
        return counts;
    }

    /** The plugin of a type's package, started and configured on first use as the engine does. */
    plugin(type: string): Promise<{ client: PluginClient; acceptSecrets: boolean }> {
        const pkg = type.split(":")[0];
        let entry = this.plugins.get(pkg);
        if (!entry) {
            entry = this.startPlugin(pkg);
            this.plugins.set(pkg, entry);
        }
        return entry;
    }

    private async startPlugin(pkg: string) {
        const factory =
            this.opts.plugins?.[pkg] ??
            (pkg === "pulumi-nodejs"
                ? (engineAddress: string) =>
                      startDynamicPlugin(engineAddress, {
                          cwd: this.opts.dir,
                          project: this.opts.project,
                          env: this.opts.env,
                      })
                : undefined);
        if (!factory) throw new Error(`no provider plugin for package ${pkg}`);
        const client = await factory(this.engine.address);
        const { acceptSecrets } = await client.configure({});
        return { client, acceptSecrets };
    }

    async close(): Promise<void> {
        const started = await Promise.allSettled(this.plugins.values());
        for (const p of started) if (p.status === "fulfilled") await p.value.client.close();
        await this.engine.close();
    }
}

class StepError extends Error {}

async function deploy(opts: ProjectOptions, dryRun: boolean): Promise<RunSummary> {
    const started = Date.now();
    const prior = await loadState(opts.statePath);
    const session = await Session.open(opts);
    try {
        const registered: ResourceState[] = [];
        const replaced: ResourceState[] = [];
        const failures: string[] = [];
        const priorByUrn = new Map(prior.resources.filter((r) => !r.pendingDelete).map((r) => [r.urn, r]));

        const step = async (req: resproto.RegisterResourceRequest, entry: ResourceState): Promise<void> => {
            const old = priorByUrn.get(entry.urn);
            if (!entry.custom) {
                entry.outputs = old?.outputs ?? {};
                return;
            }
            const { client, acceptSecrets } = await session.plugin(entry.type);
            const news = (req.getObject()?.toJavaScript() ?? {}) as Props;
            const checked = await client.check(
                entry.urn,
                forProvider(acceptSecrets, old?.inputs ?? {}),
                forProvider(acceptSecrets, news),
            );
            if (checked.failures.length) {
                throw new StepError(
                    `${entry.urn}: check failed: ${checked.failures.map((f) => `${f.property}: ${f.reason}`).join("; ")}`,
                );
            }
            entry.inputs = fromProvider(acceptSecrets, checked.inputs, news);
            const create = async () => {
                if (dryRun) {
                    // A provider without preview support: the engine shows the inputs as the outputs to be.
                    entry.outputs = entry.inputs;
                    return;
                }
                // The engine sends customTimeouts.create as the request's timeout, in seconds.
                const timeoutSeconds = parseTimeout(req.getCustomtimeouts()?.getCreate(), "customTimeouts.create");
                const made = await client.create(entry.urn, forProvider(acceptSecrets, entry.inputs), {
                    timeoutSeconds,
                });
                entry.id = made.id;
                entry.outputs = fromProvider(acceptSecrets, made.properties, entry.inputs);
            };
            if (!old) {
                session.record("create", entry.urn);
                return create();
            }
            const diff = await client.diff(
                old.id,
                entry.urn,
                forProvider(acceptSecrets, old.outputs),
                forProvider(acceptSecrets, entry.inputs),
                forProvider(acceptSecrets, old.inputs),
            );
            const changed = diff.changes === 2 || (diff.changes === 0 && !deepEqual(old.inputs, entry.inputs));
            if (!changed) {
                session.record("same", entry.urn);
                entry.id = old.id;
                entry.outputs = old.outputs;
                return;
            }
            if (diff.replaces.length) {
                session.record("replace", entry.urn, diff.replaces.join(","));
                if (diff.deleteBeforeReplace || req.getDeletebeforereplace()) {
                    if (!dryRun)
                        await client.delete(
                            old.id,
                            old.urn,
                            forProvider(acceptSecrets, old.outputs),
                            forProvider(acceptSecrets, old.inputs),
                        );
                } else {
                    replaced.push(old);
                }
                return create();
            }
            session.record("update", entry.urn);
            entry.id = old.id;
            if (dryRun) {
                entry.outputs = entry.inputs;
                return;
            }
            const updated = await client.update(
                old.id,
                entry.urn,
                forProvider(acceptSecrets, old.outputs),
                forProvider(acceptSecrets, entry.inputs),
                forProvider(acceptSecrets, old.inputs),
            );
            entry.outputs = fromProvider(acceptSecrets, updated.properties, entry.inputs);
        };

        const monitor = await startMonitor(opts, {
            async register(req) {
                const entry: ResourceState = {
                    urn: makeUrn(opts, req.getType(), req.getName(), req.getParent(), registered),
                    type: req.getType(),
                    custom: req.getCustom(),
                    id: "",
                    parent: req.getParent(),
                    inputs: {},
                    outputs: {},
                    dependencies: dependenciesOf(req),
                };
                // Registration order is dependency order: the SDK registers a resource once its inputs resolve.
                registered.push(entry);
                try {
                    await step(req, entry);
                } catch (err) {
                    registered.splice(registered.indexOf(entry), 1);
                    const message = err instanceof StepError ? err.message : `${entry.urn}: ${(err as Error).message}`;
                    failures.push(message);
                    throw err;
                }
                return entry;
            },
            registerOutputs(urn, outputs) {
                const entry = registered.find((r) => r.urn === urn);
                if (entry) entry.outputs = outputs;
            },
            fail(message) {
                failures.push(message);
            },
        });
        let programOutput = "";
        try {
            programOutput = await runProgram(opts, monitor.address, session.engine.address, dryRun);
        } catch (err) {
            failures.push((err as Error).message);
        } finally {
            await monitor.close();
        }

        const programErrors = session.engine.errors().map((e) => e.message);
        const ok = failures.length === 0 && programErrors.length === 0;
        const stillThere: ResourceState[] = [];
        const keptPending = prior.resources.filter((r) => r.pendingDelete);
        if (ok) {
            const gone = prior.resources.filter((r) => !r.pendingDelete && !registered.some((n) => n.urn === r.urn));
            for (const r of gone) session.record("delete", r.urn);
            if (!dryRun) {
                const leftovers = await deleteAll(
                    session,
                    [...keptPending, ...replaced.map((r) => ({ ...r, pendingDelete: true })), ...gone],
                    failures,
                );
                stillThere.push(...leftovers);
            }
        } else {
            // As the engine does on a failed update: nothing undeclared is deleted, and replaced
            // resources wait, marked, for the next run.
            stillThere.push(...keptPending, ...replaced.map((r) => ({ ...r, pendingDelete: true })));
            stillThere.push(
                ...prior.resources.filter((r) => !r.pendingDelete && !registered.some((n) => n.urn === r.urn)),
            );
        }
        if (!dryRun) await saveState(opts.statePath, { resources: [...registered, ...stillThere] });
        const summary = finish(session, dryRun ? "preview" : "up", started, registered, programOutput);
        if (failures.length || programErrors.length) {
            throw Object.assign(
                new Error(
                    `${summary.kind} failed:\n${[...failures, ...programErrors].join("\n")}\n--- program output ---\n${programOutput.slice(-4000)}`,
                ),
                { summary },
            );
        }
        return summary;
    } finally {
        await session.close();
    }
}

/** Deletes every resource of `state` in reverse dependency order. */
export async function destroy(opts: ProjectOptions): Promise<RunSummary> {
    const started = Date.now();
    const prior = await loadState(opts.statePath);
    const session = await Session.open(opts);
    try {
        const failures: string[] = [];
        for (const r of prior.resources) session.record("delete", r.urn);
        const left = await deleteAll(session, prior.resources, failures);
        await saveState(opts.statePath, { resources: left });
        const summary = finish(session, "destroy", started, [], "");
        if (failures.length) throw Object.assign(new Error(`destroy failed:\n${failures.join("\n")}`), { summary });
        return summary;
    } finally {
        await session.close();
    }
}

/** Reads every custom resource; the ones the provider reports gone leave the state. */
export async function refresh(opts: ProjectOptions): Promise<RunSummary> {
    const started = Date.now();
    const prior = await loadState(opts.statePath);
    const session = await Session.open(opts);
    try {
        const kept: ResourceState[] = [];
        for (const r of prior.resources) {
            if (!r.custom) {
                kept.push(r);
                continue;
            }
            const { client, acceptSecrets } = await session.plugin(r.type);
            const read = await client.read(
                r.id,
                r.urn,
                forProvider(acceptSecrets, r.outputs),
                forProvider(acceptSecrets, r.inputs),
            );
            if (!read.id) {
                session.record("delete", r.urn, "gone");
                continue;
            }
            const outputs = fromProvider(acceptSecrets, read.properties, r.outputs);
            const inputs = read.inputs ? fromProvider(acceptSecrets, read.inputs, r.inputs) : r.inputs;
            session.record(deepEqual(outputs, r.outputs) ? "same" : "update", r.urn);
            kept.push({ ...r, id: read.id, outputs, inputs });
        }
        await saveState(opts.statePath, { resources: kept });
        return finish(session, "refresh", started, kept, "");
    } finally {
        await session.close();
    }
}

function finish(
    session: Session,
    kind: RunSummary["kind"],
    started: number,
    resources: ResourceState[],
    programOutput: string,
): RunSummary {
    const stack = resources.find((r) => r.type === STACK_TYPE);
    return {
        kind,
        counts: session.counts(),
        steps: session.steps,
        outputs: stack?.outputs ?? {},
        seconds: (Date.now() - started) / 1000,
        logs: session.engine.logs,
        programOutput,
    };
}

/** Deletes custom resources dependents first; returns the ones whose delete failed. */
async function deleteAll(session: Session, resources: ResourceState[], failures: string[]): Promise<ResourceState[]> {
    const left: ResourceState[] = [];
    for (const r of reverseDependencyOrder(resources)) {
        if (!r.custom) continue;
        try {
            const { client, acceptSecrets } = await session.plugin(r.type);
            await client.delete(
                r.id,
                r.urn,
                forProvider(acceptSecrets, r.outputs),
                forProvider(acceptSecrets, r.inputs),
            );
        } catch (err) {
            failures.push(`${r.urn}: delete failed: ${(err as Error).message}`);
            left.push(r);
        }
    }
    return left.reverse();
}

/** Dependents before what they depend on (by recorded dependencies and parents), otherwise newest first. */
export function reverseDependencyOrder(resources: ResourceState[]): ResourceState[] {
    const byUrn = new Map(resources.map((r) => [r.urn, r]));
    const ordered: ResourceState[] = [];
    const seen = new Set<ResourceState>();
    const visit = (r: ResourceState) => {
        if (seen.has(r)) return;
        seen.add(r);
        for (const dep of [...r.dependencies, r.parent]) {
            const d = byUrn.get(dep);
            if (d) visit(d);
        }
        ordered.push(r);
    };
    resources.forEach(visit);
    return ordered.reverse();
}

function dependenciesOf(req: resproto.RegisterResourceRequest): string[] {
    const deps = new Set(req.getDependenciesList());
    req.getPropertydependenciesMap().forEach((d) => d.getUrnsList().forEach((u) => deps.add(u)));
    return [...deps];
}

/** `urn:pulumi:STACK::PROJECT::[parent-type$]type::name`; the stack itself is no parent type. */
function makeUrn(
    opts: ProjectOptions,
    type: string,
    name: string,
    parentUrn: string,
    registered: ResourceState[],
): string {
    const parent = registered.find((r) => r.urn === parentUrn);
    let qualified = type;
    if (parent && parent.type !== STACK_TYPE) {
        const parentQualified = parent.urn.split("::")[2];
        qualified = `${parentQualified}$${type}`;
    }
    return `urn:pulumi:${opts.stack}::${opts.project}::${qualified}::${name}`;
}

interface MonitorHandlers {
    register(req: resproto.RegisterResourceRequest): Promise<ResourceState>;
    registerOutputs(urn: string, outputs: Props): void;
    fail(message: string): void;
}

const FEATURES = new Set(["secrets"]);

/**
 * The ResourceMonitor the program talks to. A failed step is answered UNAVAILABLE, as the engine
 * answers once it has logged the error: the SDK then stops quietly, where INVALID_ARGUMENT leaves
 * the program hanging ~47 s.
 */
async function startMonitor(
    opts: ProjectOptions,
    handlers: MonitorHandlers,
): Promise<{ address: string; close(): Promise<void> }> {
    const server = new grpc.Server();
    server.addService(resrpc.ResourceMonitorService, {
        supportsFeature(
            call: grpc.ServerUnaryCall<resproto.SupportsFeatureRequest, unknown>,
            cb: grpc.sendUnaryData<resproto.SupportsFeatureResponse>,
        ) {
            cb(null, new resproto.SupportsFeatureResponse().setHassupport(FEATURES.has(call.request.getId())));
        },
        registerResource(
            call: grpc.ServerUnaryCall<resproto.RegisterResourceRequest, unknown>,
            cb: grpc.sendUnaryData<resproto.RegisterResourceResponse>,
        ) {
            handlers.register(call.request).then(
                (entry) =>
                    cb(
                        null,
                        new resproto.RegisterResourceResponse()
                            .setUrn(entry.urn)
                            .setId(entry.id)
                            .setObject(Struct.fromJavaScript(entry.outputs as any)),
                    ),
                (err: Error) => cb(grpcError(grpc.status.UNAVAILABLE, err.message)),
            );
        },
        registerResourceOutputs(
            call: grpc.ServerUnaryCall<resproto.RegisterResourceOutputsRequest, unknown>,
            cb: grpc.sendUnaryData<Empty>,
        ) {
            handlers.registerOutputs(call.request.getUrn(), (call.request.getOutputs()?.toJavaScript() ?? {}) as Props);
            cb(null, new Empty());
        },
        signalAndWaitForShutdown(_call: unknown, cb: grpc.sendUnaryData<Empty>) {
            cb(null, new Empty());
        },
        readResource(
            call: grpc.ServerUnaryCall<resproto.ReadResourceRequest, unknown>,
            cb: grpc.sendUnaryData<resproto.ReadResourceResponse>,
        ) {
            const message = `mini engine: ReadResource (${call.request.getType()} ${call.request.getName()}) is not supported`;
            handlers.fail(message);
            cb(grpcError(grpc.status.UNAVAILABLE, message));
        },
        invoke(call: grpc.ServerUnaryCall<resproto.ResourceInvokeRequest, unknown>, cb: grpc.sendUnaryData<unknown>) {
            const message = `mini engine: Invoke of ${call.request.getTok()} is not supported`;
            handlers.fail(message);
            cb(grpcError(grpc.status.UNAVAILABLE, message));
        },
    });
    const address = await listenOnFreePort(server);
    void opts;
    return { address, close: () => shutdownServer(server) };
}

/** `node <@pulumi/pulumi>/cmd/run …`, the command the Node.js language host runs; resolves with its output. */
function runProgram(opts: ProjectOptions, monitor: string, engine: string, dryRun: boolean): Promise<string> {
    const run = require.resolve("@pulumi/pulumi/cmd/run");
    const args = [
        run,
        `--monitor=${monitor}`,
        `--engine=${engine}`,
        `--project=${opts.project}`,
        `--stack=${opts.stack}`,
        `--pwd=${opts.dir}`,
    ];
    if (dryRun) args.push("--dry-run");
    args.push(".");
    const env = {
        ...process.env,
        ...opts.env,
        PULUMI_CONFIG: JSON.stringify(qualifiedConfig(opts)),
        PULUMI_CONFIG_SECRET_KEYS: JSON.stringify((opts.secretConfig ?? []).map((k) => qualify(opts.project, k))),
    };
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, args, { cwd: opts.dir, env, stdio: ["ignore", "pipe", "pipe"] });
        let output = "";
        const collect = (d: Buffer) => {
            output += d.toString("utf8");
            if (opts.echo) process.stderr.write(d);
        };
        child.stdout!.on("data", collect);
        child.stderr!.on("data", collect);
        const limit = opts.programTimeoutMs ?? 30 * 60_000;
        const timer = setTimeout(() => child.kill("SIGKILL"), limit);
        child.once("error", reject);
        child.once("exit", (code, signal) => {
            clearTimeout(timer);
            if (code === 0) resolve(output);
            else
                reject(
                    new Error(
                        `program exited with code ${code}${signal ? ` (signal ${signal}${signal === "SIGKILL" ? `, after the ${limit} ms limit` : ""})` : ""}\n${output.slice(-4000)}`,
                    ),
                );
        });
    });
}

function qualify(project: string, key: string): string {
    return key.includes(":") ? key : `${project}:${key}`;
}

function qualifiedConfig(opts: ProjectOptions): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.config ?? {}))
        out[qualify(opts.project, k)] = typeof v === "string" ? v : JSON.stringify(v);
    return out;
}
