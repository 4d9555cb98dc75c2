import { createInterface } from "node:readline";
import { InputError } from "../core/validation";
import { withProgress } from "../host/progress";
import { deleteSnapshot, listSnapshots, restoreSnapshot, saveSnapshot } from "../host/qemu/snapshots";
import { servingAsRunner } from "../resources/placement";
import { LIFECYCLES } from "../resources/lifecycles";
import { resourceNamed } from "../resources/registry";
import { RUNNER_METHODS, type RunnerReply, type RunnerRequest, type WireError } from "../core/runnerProtocol";

/**
 * The far side: started by `ssh host node runner.js`, it serves lifecycle calls on stdin/stdout
 * with the same modules the local provider uses. When the connection goes (stdin ends), it exits
 * at once: whatever it was creating is left with a creator that is gone, which the next call's
 * sweep finds and cleans exactly as after a local provider crash.
 */

// Only protocol lines go to stdout: anything else written there (console.log, .dir, .debug…) goes to stderr.
const out = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr) as typeof process.stdout.write;

function send(reply: RunnerReply): void {
    out(JSON.stringify(reply) + "\n");
}

function wireError(err: unknown): WireError {
    if (err instanceof InputError) return { name: err.name, message: err.message, problems: err.problems };
    if (err instanceof Error) return { name: err.name, message: err.message };
    return { name: "Error", message: String(err) };
}

/** Besides the lifecycles: what the test API does to a running VM that needs its directory (pulumi-qemu/testing's snapshots). */
const ACTIONS: Record<string, Record<string, (...a: any[]) => Promise<unknown>>> = {
    Snapshots: { save: saveSnapshot, restore: restoreSnapshot, remove: deleteSnapshot, list: listSnapshots },
};

function methodFor(kind: string, name: string): ((...a: unknown[]) => Promise<unknown>) | undefined {
    const resource = resourceNamed(kind);
    if (resource) {
        const lifecycle = LIFECYCLES[resource.name] as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
        return (RUNNER_METHODS as readonly string[]).includes(name) ? lifecycle[name] : undefined;
    }
    return Object.hasOwn(ACTIONS, kind) && Object.hasOwn(ACTIONS[kind], name) ? ACTIONS[kind][name] : undefined;
}

async function serveRequest(req: RunnerRequest): Promise<void> {
    const method = methodFor(req.kind, req.method);
    if (!method)
        return send({ id: req.id, error: { name: "Error", message: `the runner has no ${req.kind}.${req.method}` } });
    try {
        const sink = {
            status: (m: string) => send({ id: req.id, status: m }),
            warning: (m: string) => send({ id: req.id, warning: m }),
        };
        const result = await withProgress(sink, () => method(...req.args));
        send({ id: req.id, result: result === undefined ? null : result });
    } catch (err) {
        send({ id: req.id, error: wireError(err) });
    }
}

servingAsRunner();
process.stdin.on("end", () => process.exit(0));
createInterface({ input: process.stdin }).on("line", (line) => {
    let req: RunnerRequest;
    try {
        req = JSON.parse(line);
    } catch {
        return;
    }
    void serveRequest(req);
});
send({ hello: 1, node: process.version, pid: process.pid });
