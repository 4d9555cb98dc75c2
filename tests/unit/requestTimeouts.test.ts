import * as grpc from "@grpc/grpc-js";
import * as provrpc from "@pulumi/pulumi/proto/provider_grpc_pb";
import * as provproto from "@pulumi/pulumi/proto/provider_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { callDeadline } from "../../provider/host/callDeadline";
import { honourRequestTimeouts } from "../../provider/plugin/requestTimeouts";

/**
 * plugin/requestTimeouts.ts over real gRPC on 127.0.0.1: the timeout of a Create, Update and
 * Delete request (what the engine sends from customTimeouts) is the deadline the call runs
 * under, a request without one runs with none, and other methods are served as before. The
 * provider on the other end only reports the deadline it saw; the lifecycles' use of that
 * deadline is tested with real guests in tests/protocol/customTimeouts.test.ts.
 */

type Seen = { op: string; what?: string; leftMs?: number };
const seen: Seen[] = [];
let server: grpc.Server;
let client: provrpc.ResourceProviderClient;

beforeAll(async () => {
    honourRequestTimeouts();
    const record = (op: string) => {
        const d = callDeadline();
        seen.push({ op, what: d?.what, leftMs: d ? d.at - Date.now() : undefined });
    };
    const implementation = {
        create(call: unknown, cb: (err: null, res: provproto.CreateResponse) => void) {
            record("create");
            cb(null, new provproto.CreateResponse().setId("x").setProperties(Struct.fromJavaScript({})));
        },
        update(call: unknown, cb: (err: null, res: provproto.UpdateResponse) => void) {
            record("update");
            cb(null, new provproto.UpdateResponse().setProperties(Struct.fromJavaScript({})));
        },
        delete(call: unknown, cb: (err: null, res: Empty) => void) {
            record("delete");
            cb(null, new Empty());
        },
        getPluginInfo(call: unknown, cb: (err: null, res: unknown) => void) {
            record("getPluginInfo");
            cb(null, new (require("@pulumi/pulumi/proto/plugin_pb").PluginInfo)().setVersion("9.9.9"));
        },
    };
    server = new grpc.Server();
    server.addService(provrpc.ResourceProviderService, implementation as any);
    const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
            err ? reject(err) : resolve(p),
        ),
    );
    client = new provrpc.ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
    client?.close();
    await new Promise<void>((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
});

function unary<Req, Res>(method: string, req: Req): Promise<Res> {
    return new Promise((resolve, reject) =>
        (client as any)[method](req, (err: Error | null, res: Res) => (err ? reject(err) : resolve(res))),
    );
}

const URN = "urn:pulumi:s::p::qemu:index:VirtualMachine::vm";

test("Create, Update and Delete run under their request's timeout, named as customTimeouts", async () => {
    seen.length = 0;
    await unary("create", new provproto.CreateRequest().setUrn(URN).setTimeout(30));
    await unary("update", new provproto.UpdateRequest().setUrn(URN).setId("x").setTimeout(45));
    await unary("delete", new provproto.DeleteRequest().setUrn(URN).setId("x").setTimeout(60));
    expect(seen.map((s) => [s.op, s.what])).toEqual([
        ["create", "customTimeouts.create (30 s)"],
        ["update", "customTimeouts.update (45 s)"],
        ["delete", "customTimeouts.delete (60 s)"],
    ]);
    expect(seen[0].leftMs).toBeGreaterThan(25_000);
    expect(seen[0].leftMs).toBeLessThanOrEqual(30_000);
    expect(seen[2].leftMs).toBeGreaterThan(55_000);
});

test("a request without a timeout (0) runs with no deadline; other methods are untouched", async () => {
    seen.length = 0;
    await unary("create", new provproto.CreateRequest().setUrn(URN));
    const info = await unary<Empty, { getVersion(): string }>("getPluginInfo", new Empty());
    expect(info.getVersion()).toBe("9.9.9");
    expect(seen).toEqual([
        { op: "create", what: undefined, leftMs: undefined },
        { op: "getPluginInfo", what: undefined, leftMs: undefined },
    ]);
});
