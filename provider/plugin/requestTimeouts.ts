import * as path from "node:path";
import { withCallDeadline } from "../host/callDeadline";

/**
 * A resource's `customTimeouts` reach a provider plugin as the `timeout` (seconds) of its Create,
 * Update and Delete requests. @pulumi/pulumi's Node provider server reads the properties of those
 * requests and drops the timeout (provider/server.js calls `provider.create(urn, props)` and no
 * more), so without this the plugin would wait out its own defaults whatever the program set,
 * where the dynamic path (sdk/providers.ts) honours them.
 *
 * This wraps the server's Create, Update and Delete handlers as they are registered with gRPC
 * (grpc-js's Server.addService, the one @pulumi/pulumi itself loads) so each call runs under
 * `withCallDeadline` with the request's timeout: the same deadline the dynamic shims set, which
 * every long wait already follows and fails through its cleanup path. A timeout of 0 means none
 * was set. Nothing else of the server changes.
 */

const WRAPPED = Symbol.for("pulumi-qemu.requestTimeouts");
const OPS = ["create", "update", "delete"] as const;

export function honourRequestTimeouts(): void {
    const pulumiDir = path.dirname(require.resolve("@pulumi/pulumi/package.json"));
    const grpc = require(require.resolve("@grpc/grpc-js", { paths: [pulumiDir] }));
    const proto = grpc.Server.prototype as Record<string | symbol, any>;
    if (proto[WRAPPED]) return;
    const addService = proto.addService;
    proto.addService = function (service: any, implementation: any) {
        const isProvider = service?.create?.path === "/pulumirpc.ResourceProvider/Create";
        return addService.call(this, service, isProvider ? withTimeouts(implementation) : implementation);
    };
    proto[WRAPPED] = true;
}

/** The implementation with create/update/delete run under their request's timeout. */
function withTimeouts(implementation: any): any {
    const wrapped = Object.create(implementation);
    for (const op of OPS) {
        const handler = implementation[op];
        if (typeof handler !== "function") continue;
        wrapped[op] = (call: { request?: { getTimeout?: () => number } }, callback: unknown) =>
            withCallDeadline(call.request?.getTimeout?.() || undefined, op, () =>
                handler.call(implementation, call, callback),
            );
    }
    return wrapped;
}
