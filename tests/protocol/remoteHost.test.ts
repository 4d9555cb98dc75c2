import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver } from "../engine/driver";
import type { Props } from "../engine/wire";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { sharedGuestFiles, startFarHost, type FarHost } from "../support/farHost";

/**
 * Placement on a far host as the engine drives it: our plugin configured as a provider instance
 * (`new qemu.Provider("lab-2", { host })`, which the engine turns into CheckConfig, DiffConfig
 * and Configure on a plugin of its own), and the dynamic path with a `host` input. The far host
 * is this machine's sshd on a loopback port logging in the user pqfar (tests/support/farHost.ts).
 */

jest.setTimeout(240_000);

const DIFF_NONE = 1;
const DIFF_SOME = 2;
const PROVIDER_URN = "urn:pulumi:test::pq-protocol::pulumi:providers:qemu::lab-2";

let far: FarHost;
let shared: string;
let kernel: string;
let initrd: string;

beforeAll(async () => {
    const guest = await ensureTestGuest();
    far = await startFarHost();
    ({ dir: shared, kernel, initrd } = await sharedGuestFiles(guest));
});

afterAll(async () => {
    await far?.stop();
    if (shared) await rm(shared, { recursive: true, force: true });
});

const providerConfig = (): Props => ({
    host: far.url,
    identityFile: far.identityFile,
    knownHosts: far.knownHosts,
    version: "0.2.0",
});
const farExists = (file: string) => far.asFarUser(`test -e '${file}' && echo yes || echo no`).trim() === "yes";

test("provider configuration: CheckConfig names bad keys and values, DiffConfig replaces on another host only", async () => {
    const driver = await openDriver("qemu");
    try {
        const ok = await driver.plugin.checkConfig(PROVIDER_URN, {}, providerConfig());
        expect(ok.failures).toEqual([]);
        const bad = await driver.plugin.checkConfig(
            PROVIDER_URN,
            {},
            { host: "lab-2.example.com", identityFile: "key", hots: "x" },
        );
        expect(bad.failures).toEqual([{ property: "hots", reason: expect.stringContaining('did you mean "host"') }]);
        const badHost = await driver.plugin.checkConfig(PROVIDER_URN, {}, { host: "lab-2.example.com" });
        expect(badHost.failures).toEqual([
            {
                property: "host",
                reason: expect.stringContaining('must be an ssh:// URL; write it as "ssh://user@host:port"'),
            },
        ]);

        const moved = await driver.plugin.diffConfig(PROVIDER_URN, providerConfig(), {
            ...providerConfig(),
            host: "ssh://lab@lab-3.example.com",
        });
        expect(moved).toMatchObject({ changes: DIFF_SOME, replaces: ["host"] });
        // The same place written another way is no move.
        const same = await driver.plugin.diffConfig(PROVIDER_URN, providerConfig(), {
            ...providerConfig(),
            host: far.url.replace("127.0.0.1", "127.0.0.1").replace(/:(\d+)$/, ":$1/"),
        });
        expect(same).toMatchObject({ changes: DIFF_NONE, replaces: [] });
        const fromLocal = await driver.plugin.diffConfig(PROVIDER_URN, {}, providerConfig());
        expect(fromLocal).toMatchObject({ changes: DIFF_SOME, replaces: ["host"] });

        // A host computed from another resource is unknown at preview: not judged, and the provider may move.
        const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
        expect(
            (await driver.plugin.checkConfig(PROVIDER_URN, {}, { host: UNKNOWN, identityFile: far.identityFile }))
                .failures,
        ).toEqual([]);
        expect(
            await driver.plugin.diffConfig(PROVIDER_URN, providerConfig(), { ...providerConfig(), host: UNKNOWN }),
        ).toMatchObject({ changes: DIFF_SOME, replaces: ["host"] });
        // Only the host decides a move: a key an older or newer version wrote does not.
        expect(
            await driver.plugin.diffConfig(PROVIDER_URN, { ...providerConfig(), futureKey: 1 }, providerConfig()),
        ).toMatchObject({ changes: DIFF_NONE, replaces: [] });
        await expect(driver.plugin.configure({ host: "ssh://lab:pw@lab-2" })).rejects.toThrow(
            /qemu provider configuration: host: must not hold a password/,
        );
    } finally {
        await driver.close();
    }
});

test("a provider instance configured for the far host: an image and a VM made, refreshed, imported and deleted there", async () => {
    const driver = await openDriver("qemu", { config: providerConfig() });
    try {
        // An image: Check places it (host in its inputs), Create makes it on the far host.
        const imgUrn = driver.urn("DiskImage", "far-disk");
        const imgInputs = { source: { kind: "blank", size: "8M", format: "qcow2" } };
        const checked = await driver.plugin.check(imgUrn, {}, imgInputs);
        expect(checked.failures).toEqual([]);
        expect(checked.inputs.host).toBe(far.url);
        const made = await driver.plugin.create(imgUrn, checked.inputs);
        const img = made.properties as { path: string; host: string; hostAccess?: unknown };
        expect(img.host).toBe(far.url);
        // The key files come from the provider's configuration; state keeps their paths (never a key) for readers without it.
        expect(img.hostAccess).toEqual({ identityFile: far.identityFile, knownHosts: far.knownHosts });
        expect(img.path.startsWith(`${far.home}/.local/state/pulumi-qemu/images/`)).toBe(true);
        expect(execFileSync("stat", ["-c", "%U", img.path], { encoding: "utf8" }).trim()).toBe(far.user);
        const read = await driver.plugin.read(made.id, imgUrn, made.properties, checked.inputs);
        expect(read.properties).toEqual(made.properties);
        expect(
            (
                await driver.plugin.diff(
                    made.id,
                    imgUrn,
                    read.properties,
                    (await driver.plugin.check(imgUrn, checked.inputs, imgInputs)).inputs,
                )
            ).changes,
        ).toBe(DIFF_NONE);

        // `pulumi import qemu:index:DiskImage NAME <path>` reads on the configured host.
        const imported = await driver.plugin.read(img.path, driver.urn("DiskImage", "adopted"), {}, {});
        expect(imported.id).toBe(img.path);
        expect(imported.properties).toMatchObject({ path: img.path, host: far.url });
        expect(imported.inputs).toMatchObject({ host: far.url });

        // A VM booting from an overlay on that image's host.
        const vmUrn = driver.urn("VirtualMachine", "far-vm");
        const vmInputs = {
            vm: {
                name: "far-vm",
                accel: "tcg",
                kernel,
                initrd,
                kernelArguments: guestKernelArguments({ name: "far-vm" }),
            },
            ready: { serialPattern: READY_MARKER, timeoutSeconds: 150 },
        };
        const vmChecked = await driver.plugin.check(vmUrn, {}, vmInputs);
        expect(vmChecked.failures).toEqual([]);
        const vm = await driver.plugin.create(vmUrn, vmChecked.inputs);
        const vmOuts = vm.properties as { pid: number; vmDir: string; host: string; status: string };
        expect(vmOuts).toMatchObject({ host: far.url, status: "running" });
        expect(execFileSync("ps", ["-o", "user=", "-p", String(vmOuts.pid)], { encoding: "utf8" }).trim()).toBe(
            far.user,
        );
        expect((await driver.plugin.diff(vm.id, vmUrn, vm.properties, vmChecked.inputs)).changes).toBe(DIFF_NONE);

        await driver.plugin.delete(vm.id, vmUrn, vm.properties);
        expect(farExists(vmOuts.vmDir)).toBe(false);
        await driver.plugin.delete(made.id, imgUrn, made.properties);
        expect(farExists(img.path)).toBe(false);
    } finally {
        await driver.close();
    }
});

test("the dynamic path: a host input places a resource; the same inputs here and there have the same hashes", async () => {
    const driver = await openDriver("dynamic");
    const localState = await mkdtemp(path.join(os.tmpdir(), "pq-remote-dyn-"));
    try {
        const urn = driver.urn("DiskImage", "dyn-far");
        const source = { kind: "blank", size: "8M", format: "qcow2" };
        const there = await driver.plugin.check(urn, {}, driver.news("DiskImage", { source, host: far.host }));
        expect(there.failures).toEqual([]);
        const made = await driver.plugin.create(urn, there.inputs);
        const here = await driver.plugin.create(
            urn,
            (await driver.plugin.check(urn, {}, driver.news("DiskImage", { source, stateDir: localState }))).inputs,
        );
        expect(made.properties).toMatchObject({
            host: far.url,
            hostAccess: { identityFile: far.identityFile, knownHosts: far.knownHosts },
        });
        expect(made.properties.inputHash).toBe(here.properties.inputHash);
        expect(farExists(made.id)).toBe(true);

        const badHost = await driver.plugin.check(
            urn,
            {},
            driver.news("DiskImage", { source, host: "ssh://lab@host/path" }),
        );
        expect(badHost.failures).toEqual([
            { property: "host", reason: expect.stringContaining("must not have a path") },
        ]);

        // Delete needs only what state kept: the URL and the key files.
        await driver.plugin.delete(made.id, urn, made.properties);
        expect(farExists(made.id)).toBe(false);
        await driver.plugin.delete(here.id, urn, here.properties);
    } finally {
        await driver.close();
        await rm(localState, { recursive: true, force: true });
    }
});
