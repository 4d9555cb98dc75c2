import * as grpc from "@grpc/grpc-js";
import * as enginerpc from "@pulumi/pulumi/proto/engine_grpc_pb";
import * as engineproto from "@pulumi/pulumi/proto/engine_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { listenOnFreePort, shutdownServer } from "./grpc";

export type Severity = "debug" | "info" | "warning" | "error";

export interface LogEntry {
    severity: Severity;
    message: string;
    urn: string;
    /** A status message: the CLI shows it on the resource's line and does not keep it. */
    ephemeral: boolean;
}

/**
 * The engine's side of the `pulumirpc.Engine` service: what plugins and programs log, and the
 * root resource the program sets. Plugins report failures here rather than through their gRPC
 * answers, so a test that ignores these logs can miss a broken provider.
 */
export interface EngineServer {
    address: string;
    logs: LogEntry[];
    errors(): LogEntry[];
    close(): Promise<void>;
}

const SEVERITIES: Record<number, Severity> = {
    [engineproto.LogSeverity.DEBUG]: "debug",
    [engineproto.LogSeverity.INFO]: "info",
    [engineproto.LogSeverity.WARNING]: "warning",
    [engineproto.LogSeverity.ERROR]: "error",
};

export async function startEngineServer(opts: { echo?: boolean } = {}): Promise<EngineServer> {
    const logs: LogEntry[] = [];
    let rootUrn = "";
    const server = new grpc.Server();
    server.addService(enginerpc.EngineService, {
        log(call: grpc.ServerUnaryCall<engineproto.LogRequest, Empty>, callback: grpc.sendUnaryData<Empty>) {
            const entry = {
                severity: SEVERITIES[call.request.getSeverity()] ?? "error",
                message: call.request.getMessage(),
                urn: call.request.getUrn(),
                ephemeral: call.request.getEphemeral(),
            };
            logs.push(entry);
            if (opts.echo && entry.severity !== "debug")
                process.stderr.write(`[engine ${entry.severity}] ${entry.message}\n`);
            callback(null, new Empty());
        },
        getRootResource(_call: unknown, callback: grpc.sendUnaryData<engineproto.GetRootResourceResponse>) {
            callback(null, new engineproto.GetRootResourceResponse().setUrn(rootUrn));
        },
        setRootResource(
            call: grpc.ServerUnaryCall<engineproto.SetRootResourceRequest, unknown>,
            callback: grpc.sendUnaryData<engineproto.SetRootResourceResponse>,
        ) {
            rootUrn = call.request.getUrn();
            callback(null, new engineproto.SetRootResourceResponse());
        },
        requirePulumiVersion(_call: unknown, callback: grpc.sendUnaryData<engineproto.RequirePulumiVersionResponse>) {
            callback(null, new engineproto.RequirePulumiVersionResponse());
        },
    });
    const address = await listenOnFreePort(server);
    return {
        address,
        logs,
        errors: () => logs.filter((l) => l.severity === "error"),
        close: () => shutdownServer(server),
    };
}
