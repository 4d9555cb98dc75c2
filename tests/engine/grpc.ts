import * as grpc from "@grpc/grpc-js";

/** Binds `server` on a kernel-chosen loopback port and returns "127.0.0.1:PORT". */
export function listenOnFreePort(server: grpc.Server): Promise<string> {
    return new Promise((resolve, reject) => {
        server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
            if (err) reject(err);
            else resolve(`127.0.0.1:${port}`);
        });
    });
}

/** Stops accepting calls and waits a little for running ones; then cuts them. */
export function shutdownServer(server: grpc.Server, graceMs = 2000): Promise<void> {
    return new Promise((resolve) => {
        const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
        }, graceMs);
        server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
        });
    });
}

/** A gRPC error a handler can pass to its callback. */
export function grpcError(code: grpc.status, details: string): Partial<grpc.StatusObject> {
    return { code, details };
}
