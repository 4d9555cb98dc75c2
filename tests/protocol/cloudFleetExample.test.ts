import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { assertBuilt, MAIN_ROOT } from "../engine/driver";
import { destroy, loadState, preview, up, type ProjectOptions, type RunSummary } from "../engine/miniEngine";
import { prepareProgram } from "../engine/program";
import { ensureCloudGuest } from "../guest/cloudGuest";
import { startImageServer, type ImageServer } from "../support/imageServer";
import { isRunning, processesMentioning } from "../support/process";

/**
 * examples/cloud-fleet as a user runs it, through the mini engine and the dynamic-provider
 * plugin, with its config pointed at a local mirror: an HTTP server on 127.0.0.1 serving the
 * cloud-like Debian image (tests/guest/cloudGuest.ts, the shape of Debian's genericcloud) under
 * Debian's file name, with a SHA512SUMS beside it. The user's path exactly: URL → overlay → seed →
 * VM booting its disk (no kernel) → DHCP on the private Network → peers by name.
 * This is issue 21's Debian cloud-like guest on DHCP: each guest's lease is the address
 * `addressOf` gives at preview and `nics` reports, and each resolves and pings the other two.
 * One `up` serves every assertion: three Debian boots under TCG are minutes.
 */

const NAMES = ["node-1", "node-2", "node-3"];
const IMAGE_NAME = "debian-12-genericcloud-amd64.qcow2";
let work: string;
let server: ImageServer;
let opts: ProjectOptions;
let stateDir: string;
let first: RunSummary;

function changes(s: RunSummary): number {
    return s.counts.create + s.counts.update + s.counts.replace + s.counts.delete;
}

function noErrors(s: RunSummary): void {
    expect(s.logs.filter((l) => l.severity === "error")).toEqual([]);
}

beforeAll(async () => {
    assertBuilt();
    const guest = await ensureCloudGuest();
    work = await mkdtemp(path.join(os.tmpdir(), "pq-cloud-fleet-"));
    await writeFile(path.join(work, "SHA512SUMS"), `${guest.sha512}  ${IMAGE_NAME}\n`);
    server = await startImageServer();
    server.serve(`/cloud/${IMAGE_NAME}`, guest.image);
    server.serve("/cloud/SHA512SUMS", path.join(work, "SHA512SUMS"));
    const dir = await prepareProgram(path.join(MAIN_ROOT, "examples", "cloud-fleet"), path.join(work, "program"));
    stateDir = path.join(work, "qs");
    opts = {
        dir,
        project: "qemu-cloud-fleet",
        stack: "test",
        statePath: path.join(work, "state.json"),
        env: { PULUMI_QEMU_STATE_DIR: stateDir },
        config: { imageUrl: `${server.url}/cloud/${IMAGE_NAME}`, checksumUrl: `${server.url}/cloud/SHA512SUMS` },
    };
}, 20 * 60_000);

afterAll(async () => {
    if (opts && existsSync(opts.statePath))
        await destroy(opts).catch((err) => console.error(`cleanup destroy: ${err.message}`));
    await server?.close();
    if (work) await rm(work, { recursive: true, force: true });
}, 300_000);

test(
    "up boots three cloud VMs from one URL image; each gets its DHCP lease and reaches the others by name",
    async () => {
        const load = os
            .loadavg()
            .map((l) => l.toFixed(1))
            .join(" ");
        first = await up(opts);
        noErrors(first);
        // The image, the network, and per VM an overlay, a seed, the VM and its GuestCommand.
        expect(first.counts.create).toBe(2 + 4 * NAMES.length);
        const state = await loadState(opts.statePath);
        const vms = state.resources.filter((r) => r.type === "pulumi-nodejs:dynamic/qemu:VirtualMachine");
        const ready = vms.map((r) => `${r.urn.split("::").pop()} ${Number(r.outputs.readySeconds).toFixed(0)} s`);
        console.log(
            `cloud-fleet up: ${first.seconds.toFixed(0)} s; cold boot to ready (cloud-init done) under TCG: ${ready.join(", ")}; load before: ${load}, after: ${os
                .loadavg()
                .map((l) => l.toFixed(1))
                .join(" ")}`,
        );
        // The image came from the mirror, checked against its SHA512SUMS.
        expect(server.seen.some((s) => s.url === `/cloud/${IMAGE_NAME}`)).toBe(true);

        const addresses = first.outputs.addresses as Record<string, string>;
        const reports = first.outputs.reports as Record<string, string>;
        expect(Object.keys(addresses).sort()).toEqual(NAMES);
        const lan = state.resources.find((r) => r.type === "pulumi-nodejs:dynamic/qemu:Network")!;
        const leases = await readFile(path.join(String(lan.outputs.networkDir), "dhcp", "leases"), "utf8");
        console.log(`dnsmasq's leases:\n${leases}`);
        for (const name of NAMES) {
            const vm = vms.find((r) => r.urn.endsWith(`::${name}`))!;
            const nics = vm.outputs.nics as { ipv4: string; mac: string; dhcp?: boolean }[];
            console.log(`${name}: addressOf ${addresses[name]}, nics ${JSON.stringify(nics)}\n${reports[name]}`);
            // What addressOf said is what nics reports, what the network's dnsmasq leased to this VM's MAC
            // (its lease file), and what the guest holds on its NIC: the image pins nothing and the seed
            // has no network config, so the address can only have come from DHCP.
            expect(nics.map((n) => n.ipv4)).toEqual([addresses[name]]);
            expect(leases).toContain(` ${nics[0].mac} ${addresses[name]} `);
            expect(reports[name]).toMatch(
                new RegExp(`^\\d+: \\S+\\s+inet ${addresses[name].replace(/\./g, "\\.")}/24 `, "m"),
            );
            // The other two, by name through the network's DNS, each answering a ping.
            for (const peer of NAMES.filter((n) => n !== name)) {
                const ip = addresses[peer].replace(/\./g, "\\.");
                expect(reports[name]).toMatch(new RegExp(`^${ip}\\s+${peer}\\.fleet$`, "m"));
                expect(reports[name]).toMatch(new RegExp(`PING ${peer}\\.fleet \\(${ip}\\)`));
            }
            expect(reports[name].match(/1 packets transmitted, 1 received/g)).toHaveLength(2);
        }
    },
    60 * 60_000,
);

test("the addresses are known at preview, and a second up changes nothing", async () => {
    const p = await preview(opts);
    noErrors(p);
    expect(changes(p)).toBe(0);
    expect(p.outputs.addresses).toEqual(first.outputs.addresses);
    const again = await up(opts);
    noErrors(again);
    expect(changes(again)).toBe(0);
    expect(again.counts.same).toBe(2 + 4 * NAMES.length);
    console.log(`cloud-fleet no-op up: ${again.seconds.toFixed(1)} s`);
}, 300_000);

test("destroy leaves no QEMU, dnsmasq or vde_switch of the stack running, and none of its files", async () => {
    const state = await loadState(opts.statePath);
    const pids = state.resources.flatMap((r) => {
        const o = r.outputs as { pid?: number; dhcpIdentity?: { server: { pid: number }; plug: { pid: number } } };
        return [o.pid, o.dhcpIdentity?.server.pid, o.dhcpIdentity?.plug.pid].filter((p): p is number => !!p);
    });
    // QEMU ×3, the switch, dnsmasq and its plug, all named by the stack's state directory.
    expect(pids).toHaveLength(NAMES.length + 3);
    expect(processesMentioning(stateDir).length).toBeGreaterThanOrEqual(pids.length);
    const s = await destroy(opts);
    noErrors(s);
    // Every resource, and the dynamic provider's own.
    expect(s.counts.delete).toBe(3 + 4 * NAMES.length);
    expect(pids.filter(isRunning)).toEqual([]);
    expect(processesMentioning(stateDir)).toEqual([]);
    expect((await loadState(opts.statePath)).resources).toEqual([]);
    // Only the host-wide caches stay, by design: downloads (shared by every image and stack on the
    // host), the accelerator probe and the file-hash cache. No VM, network or image of the stack.
    const left = readdirSync(stateDir, { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => path.relative(stateDir, path.join(e.parentPath, e.name)));
    console.log(`left in the state directory after destroy: ${JSON.stringify(left)}`);
    const caches = new Set(["accel.json", "hash-cache.v2.json"]);
    expect(left.filter((f) => !f.startsWith(`downloads${path.sep}`) && !caches.has(f))).toEqual([]);
    for (const dir of ["vms", "networks", "images"])
        expect(existsSync(path.join(stateDir, dir)) ? readdirSync(path.join(stateDir, dir)) : []).toEqual([]);
}, 300_000);
