import type * as grpcTypes from "@grpc/grpc-js";
import type { ProgressSink } from "../host/progress";
import { withProgress } from "../host/progress";

/**
 * Progress and warnings as the engine's own log messages (pulumirpc.Engine/Log), the channel
 * `pulumi.log` uses in a program. Through our plugin each message carries the resource's URN, so
 * the CLI shows it on the resource's line (status) or under it (warnings). Through the
 * dynamic-provider plugin there is no URN to give (its provider methods are not told which
 * resource they serve), so messages name the resource in their text and the engine shows them
 * for the stack.
 */

const clients = new Map<string, { client: any; last: Promise<void> }>();

function clientFor(address: string) {
    let entry = clients.get(address);
    if (!entry) {
        const grpc = require("@grpc/grpc-js") as typeof grpcTypes;
        const enginerpc = require("@pulumi/pulumi/proto/engine_grpc_pb");
        entry = {
            client: new enginerpc.EngineClient(address, grpc.credentials.createInsecure()),
            last: Promise.resolve(),
        };
        clients.set(address, entry);
    }
    return entry;
}

type Severity = "info" | "warning";

/** Sends one message; in order with the ones before it, and never failing the work it describes. */
export function sendLog(
    address: string,
    severity: Severity,
    message: string,
    urn: string,
    ephemeral: boolean,
): Promise<void> {
    const engineproto = require("@pulumi/pulumi/proto/engine_pb");
    const entry = clientFor(address);
    const req = new engineproto.LogRequest();
    req.setSeverity(severity === "warning" ? engineproto.LogSeverity.WARNING : engineproto.LogSeverity.INFO);
    req.setMessage(message);
    req.setUrn(urn);
    req.setEphemeral(ephemeral);
    entry.last = entry.last.then(
        () =>
            new Promise<void>((resolve) => {
                const deadline = new Date(Date.now() + 10_000);
                entry!.client.log(
                    req,
                    new (require("@grpc/grpc-js") as typeof grpcTypes).Metadata(),
                    { deadline },
                    (err: Error | null) => {
                        // The engine gone or slow costs a progress line, nothing else; say so where the engine reads plugin output.
                        if (err)
                            process.stderr.write(
                                `pulumi-qemu: could not send a log message to the engine (${err.message}): ${message}\n`,
                            );
                        resolve();
                    },
                );
            }),
    );
    return entry.last;
}

/**
 * Our plugin's sink for one resource: progress as ephemeral status (the CLI shows the latest on
 * the resource's line and does not keep it), warnings as kept warnings.
 */
export function resourceSink(address: string, urn: string, hide: (message: string) => string = (m) => m): ProgressSink {
    return {
        status: (message) => void sendLog(address, "info", hide(message), urn, true),
        warning: (message) => void sendLog(address, "warning", hide(message), urn, false),
    };
}

/** The dynamic plugin's sink: no URN, so each message names its resource; status as plain info, since status needs a resource to attach to. */
export function stackSink(address: string, label: string): ProgressSink {
    return {
        status: (message) => void sendLog(address, "info", `${label}: ${message}`, "", false),
        warning: (message) => void sendLog(address, "warning", `${label}: ${message}`, "", false),
    };
}

/** The engine address the dynamic-provider plugin was started with, when this process is one. */
export function dynamicPluginEngineAddress(argv = process.argv): string | undefined {
    if (!/[\\/]cmd[\\/]dynamic-provider([\\/]index(\.js)?)?$/.test(argv[1] ?? "")) return undefined;
    const { parseArgs } = require("@pulumi/pulumi/provider/internals");
    return parseArgs(argv.slice(2))?.engineAddress;
}

/**
 * Runs a dynamic provider call with progress sent to the engine, when this process is the
 * dynamic-provider plugin; otherwise (a program's own process, a test) just runs it.
 */
export function inDynamicProvider<T>(kind: string, inputs: unknown, work: () => Promise<T>): Promise<T> {
    const address = dynamicPluginEngineAddress();
    if (!address) return work();
    const resource = kind.charAt(0).toUpperCase() + kind.slice(1);
    return withProgress(stackSink(address, `pulumi-qemu ${resource} ${labelOf(inputs)}`.trimEnd()), work);
}

/** What names a resource in a message without a URN: the VM's name, the file's path, the network's name. */
function labelOf(inputs: unknown): string {
    const i = (inputs ?? {}) as Record<string, any>;
    const candidates = [i.vm?.name, i.path, i.name, i.source?.path];
    const found = candidates.find((c) => typeof c === "string" && c.length > 0 && c.length < 200);
    return found ? JSON.stringify(found) : "";
}
