import { placed, type PlacementInputs, type PlacementOutputs } from "./placement";
import type * as pulumi from "@pulumi/pulumi";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import * as path from "node:path";
import { z } from "zod";
import {
    defaultSubnet,
    formatSubnet,
    netmask,
    networkSubnetProblem,
    parseSubnet,
    subnetsOverlap,
    type Subnet,
} from "../core/network";
import { NETWORK_OUTPUT_KEYS } from "../core/resourceKeys";
import { absolutePath, InputError, parseOrThrow, plainText, refuseUnknownKeys } from "../core/validation";
import {
    identityString,
    liveNetworks,
    networksDir,
    readRecordAt,
    recordPath,
    removeLeases,
    writeNetworkRecord,
    type NetworkRecord,
} from "../host/net/networkStore";
import { identify, readPidfile, type ProcessIdentity } from "../host/qemu/qemuProcess";
import { networkDomain, serverAddress, serverMac } from "../core/dhcp";
import { checkDhcp, removeDhcpFiles, startDhcp, stopDhcp, type DhcpIdentity } from "../host/net/dhcpServer";
import { ensureOwnDir, ensureStateDir, ownDirChain, removeDirIfEmpty, resolveStateDir } from "../host/files/stateDir";
import { requireState } from "./stateGuard";
import { sweepVmsOf } from "./virtualMachine/record";

/** What read and delete need of a Network's state. */
const NETWORK_STATE = {
    networkDir: "string",
    pidfile: "string",
    pid: "number",
    processStartTime: "string",
    bootId: "string",
} as const;
import { checkOurSwitch, removeSwitchFiles, startSwitch, stopSwitch, switchPaths } from "../host/net/vdeSwitch";
import { checkWith, hasUnknown, withoutUndefined } from "./common";

/**
 * Network: a private Ethernet segment on this host, rootless — one `vde_switch` whose control
 * directory only this user can open. VMs join it with `vm.networks: [{ network: net.id }]`;
 * membership lives on the VMs (their leases in the network's directory), so creating a VM
 * never updates the network.
 *
 * The network's identity is its id (a fresh directory name under `<stateDir>/networks/`) plus
 * the identity of its switch process. A default subnet is a /24 derived from the id, moved on
 * when it would overlap another live network of the same state directory.
 *
 * With `dhcp` (the default) the network also runs its DHCP/DNS server (host/dhcpServer.ts),
 * which is not part of its identity: turning it on or off, or starting it again after it died
 * (drift), is an update in place that neither the switch nor the VMs notice.
 */

/** The kernel's limit on a unix socket path, and the longest name libvdeplug puts in the switch directory (`.NNNNN-NNNNN`). */
const MAX_SOCKET_PATH_BYTES = 107;
const VDE_PORT_SOCKET_NAME_BYTES = 13;
const DEFAULT_SUBNET_ATTEMPTS = 64;
/** How old a network directory without a record must be to count as left by a crashed create (a create takes ~30 ms). */
const ORPHAN_AGE_MS = 60_000;

export interface NetworkInputs extends PlacementInputs {
    name?: string;
    subnet?: string;
    stateDir?: string;
    dhcp?: boolean;
}

export interface NetworkOutputs extends PlacementOutputs {
    name?: string;
    /** The subnet asked for, when one was. */
    requestedSubnet?: string;
    stateDir?: string;
    /** The subnet in use (asked for, or the default picked at create). */
    subnet: string;
    netmask: string;
    /** The network's private directory: its record, switch and leases. */
    networkDir: string;
    /** Where VMs attach: the switch's control directory. */
    switchDir: string;
    pidfile: string;
    pid: number;
    processStartTime: string;
    bootId: string;
    /** Which switch process this is; VMs record it and report drift when it changes or dies. */
    switchIdentity: string;
    /** Whether the network runs DHCP/DNS; absent in the state of a network made before the field existed, which reads as false. */
    dhcp?: boolean;
    /** The DNS domain VMs answer under (hostname.domain). */
    domain?: string;
    /** The DHCP/DNS server's address on the network (the subnet's last host). */
    dhcpServer?: string;
    /** The server's processes (dnsmasq and its plug into the switch). */
    dhcpIdentity?: DhcpIdentity;
    /** Set by read when the server died or was replaced; the next up starts it again in place. */
    dhcpDrift?: string;
}

const inputSchema = z
    .object({
        name: plainText("name")
            .regex(/^[A-Za-z0-9_.-]{1,40}$/, { error: "name must be 1 to 40 letters, digits, '.', '_' or '-'" })
            .optional()
            .meta({
                description:
                    "A label for the network's directory, 1 to 40 letters, digits, '.', '_' or '-'; default none (two networks with one name are still two networks).",
                replaceOnChanges: true,
            }),
        subnet: z
            .string({ error: 'subnet must be a string such as "10.77.1.0/24"' })
            .superRefine((s, ctx) => {
                const why = networkSubnetProblem(s);
                if (why) ctx.addIssue({ code: "custom", message: why });
            })
            .optional()
            .meta({
                description:
                    'IPv4 CIDR such as "10.77.1.0/24"; default a /24 in 10.64.0.0/10 derived from the network\'s id, moved on when it overlaps a live network.',
                replaceOnChanges: true,
            }),
        stateDir: absolutePath("stateDir").optional().meta({
            description:
                "State directory; VMs that join must use the same. Default $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu.",
            replaceOnChanges: true,
        }),
        dhcp: z.boolean({ error: "dhcp must be true or false" }).optional().meta({
            description:
                "Run a DHCP and DNS server (dnsmasq, rootless, in a network namespace of its own) on the network: each VM NIC gets its reserved address by DHCP and every VM's hostname resolves, bare and as hostname.<domain>. Default true; false keeps a bare switch (guests then need static addresses, e.g. kernel ip=).",
        }),
    })
    .strict();

/** A Network's inputs as the schema, the SDK and the docs show them. */
export const networkInputs = inputSchema;
const NETWORK_INPUT_KEYS = Object.keys(networkInputs.shape);

type Parsed = z.output<typeof inputSchema>;

/** Only our inputs: a dynamic resource's also carry `__provider` and the declared output keys. */
function parseInputs(inputs: NetworkInputs): Parsed {
    refuseUnknownKeys((inputs ?? {}) as Record<string, unknown>, NETWORK_INPUT_KEYS, NETWORK_OUTPUT_KEYS);
    const { name, subnet, stateDir, dhcp } = inputs ?? {};
    return parseOrThrow(inputSchema, withoutUndefined({ name, subnet, stateDir, dhcp }), "");
}

async function checkHere(_olds: unknown, news: any): Promise<pulumi.dynamic.CheckResult> {
    if (hasUnknown(news)) return { inputs: news };
    return checkWith(() => parseInputs(news), news);
}

/**
 * A change of name, subnet or stateDir makes a new network (a new switch); its VMs see a new id
 * and are replaced with it. `dhcp`, and a DHCP server that is not running (drift), are updated
 * in place. A state from before `dhcp` existed has no `dhcp` output: such a network keeps running
 * without a server until the program asks for one (`dhcp: true`), so a no-op up over a stack made
 * before touches nothing (see wantsDhcp).
 */
async function diffHere(_id: string, olds: NetworkOutputs, news: NetworkInputs): Promise<pulumi.dynamic.DiffResult> {
    // Empty or damaged state says so, as every other resource's diff does, instead of "no changes".
    requireState("Network", "diff", olds, NETWORK_STATE);
    if (hasUnknown(news)) return { changes: true, replaces: ["subnet"], deleteBeforeReplace: true };
    const next = parseInputs(news);
    const replaces: string[] = [];
    if ((next.name ?? null) !== (olds.name ?? null)) replaces.push("name");
    if ((next.subnet ?? null) !== (olds.requestedSubnet ?? null)) replaces.push("subnet");
    if ((next.stateDir ?? null) !== (olds.stateDir ?? null)) replaces.push("stateDir");
    // The old switch goes first: an explicit subnet would otherwise overlap its own predecessor.
    if (replaces.length) return { changes: true, replaces, deleteBeforeReplace: true };
    const wantDhcp = wantsDhcp(next.dhcp, olds);
    if (wantDhcp !== (olds.dhcp ?? false)) return { changes: true, replaces: [] };
    // A dead server is repaired by up even without a refresh before it.
    if (wantDhcp && (olds.dhcpDrift !== undefined || (await dhcpProblem(olds)) !== undefined))
        return { changes: true, replaces: [] };
    return { changes: false };
}

/**
 * Whether the network should run its DHCP/DNS server: as the program says; left out, yes — except
 * for a network made before `dhcp` existed (its state has no `dhcp`), which stays as it was made,
 * as a VM made before `onReboot` keeps its behaviour: an existing stack's no-op up changes nothing.
 */
function wantsDhcp(asked: boolean | undefined, olds: NetworkOutputs): boolean {
    return asked ?? olds.dhcp !== undefined;
}

/** Why the network's DHCP server is not running as the state recorded it, or undefined when it is. */
async function dhcpProblem(props: NetworkOutputs): Promise<string | undefined> {
    if (!props.dhcp) return undefined;
    if (!props.dhcpIdentity) return "its DHCP/DNS server was never started";
    const live = await checkDhcp(props.dhcpIdentity, props.networkDir);
    return live.alive ? undefined : `its DHCP/DNS server is not running (${live.reason}); the next up starts it again`;
}

/**
 * Starts (dhcp) or stops (no dhcp) the network's DHCP/DNS server and records it for the VMs:
 * the network's record says whether to register with it and which process to reload.
 */
async function applyDhcp(
    rec: NetworkRecord,
    label: string,
    dhcp: boolean,
    old: DhcpIdentity | undefined,
): Promise<Pick<NetworkOutputs, "dhcp" | "domain" | "dhcpServer" | "dhcpIdentity">> {
    const subnet = parseSubnet(rec.subnet) as Subnet;
    const domain = networkDomain(label);
    await stopDhcp(old, rec.networkDir);
    if (!dhcp) {
        await removeDhcpFiles(rec.networkDir);
        await writeNetworkRecord({ ...rec, dhcp: undefined });
        return { dhcp: false, domain };
    }
    const identity = await startDhcp(rec.networkDir, rec.switchDir, { subnet, domain, mac: serverMac(rec.id, subnet) });
    try {
        await writeNetworkRecord({ ...rec, dhcp: { domain, identity } });
    } catch (err) {
        await stopDhcp(identity, rec.networkDir).catch(() => undefined);
        throw err;
    }
    return { dhcp: true, domain, dhcpServer: serverAddress(subnet), dhcpIdentity: identity };
}

/** Turns DHCP on or off, or starts a server that died, in place: the switch and its VMs are untouched. */
async function updateHere(id: string, olds: NetworkOutputs, news: NetworkInputs): Promise<pulumi.dynamic.UpdateResult> {
    requireState("Network", "update", olds, NETWORK_STATE);
    const p = parseInputs(news);
    const rec = await readRecordAt(olds.networkDir);
    if (!rec || rec.id !== id)
        throw new Error(`network ${id} has no record in ${olds.networkDir}; run a refresh so that it is made again`);
    const dhcp = await applyDhcp(rec, p.name ?? id, wantsDhcp(p.dhcp, olds), olds.dhcpIdentity ?? rec.dhcp?.identity);
    const { dhcpDrift: _drift, dhcpIdentity: _old, dhcpServer: _server, ...rest } = olds;
    return { outs: withoutUndefined({ ...rest, ...dhcp }) };
}

async function createHere(inputs: NetworkInputs): Promise<pulumi.dynamic.CreateResult> {
    const p = parseInputs(inputs);
    const stateDir = await ensureStateDir(resolveStateDir(p.stateDir));
    const parent = await ensureOwnDir(networksDir(stateDir));
    await cleanOrphans(parent);
    // And the orphaned QEMU of a killed VM create in this state directory.
    await sweepVmsOf(stateDir);
    const label = (p.name ?? "net").slice(0, 16);
    // mkdtemp: a fresh 0700 directory with a random suffix, so two stacks using one name never share a switch.
    const networkDir = await mkdtemp(path.join(parent, `${label}-`));
    const id = path.basename(networkDir);
    const { switchDir, pidfile } = switchPaths(networkDir);
    let identity: ProcessIdentity | undefined;
    try {
        assertSocketPathFits(switchDir);
        const subnet = await chooseSubnet(stateDir, id, p.subnet);
        identity = await startSwitch(networkDir);
        const record: NetworkRecord = {
            format: 1,
            id,
            subnet: formatSubnet(subnet),
            networkDir,
            switchDir,
            pidfile,
            switchIdentity: identity,
        };
        await writeNetworkRecord(record);
        const dhcp = await applyDhcp(record, p.name ?? id, p.dhcp ?? true, undefined);
        const outs: NetworkOutputs = {
            name: p.name,
            requestedSubnet: p.subnet,
            stateDir: p.stateDir,
            subnet: formatSubnet(subnet),
            netmask: netmask(subnet),
            networkDir,
            switchDir,
            pidfile,
            pid: identity.pid,
            processStartTime: identity.startTime,
            bootId: identity.bootId,
            switchIdentity: identityString(identity),
            ...dhcp,
        };
        return { id, outs: withoutUndefined(outs) };
    } catch (err) {
        await stopDhcp(undefined, networkDir).catch(() => undefined);
        if (identity) await stopSwitch(identity, pidfile).catch(() => undefined);
        await removeNetworkDir(networkDir);
        throw err;
    }
}

function assertSocketPathFits(switchDir: string): void {
    const bytes = Buffer.byteLength(switchDir) + 1 + VDE_PORT_SOCKET_NAME_BYTES;
    if (bytes > MAX_SOCKET_PATH_BYTES) {
        throw new InputError([
            {
                property: "stateDir",
                reason: `the switch's sockets under ${switchDir} would be ${bytes} bytes long; unix sockets allow ${MAX_SOCKET_PATH_BYTES}. Choose a shorter stateDir`,
            },
        ]);
    }
}

/** The asked-for subnet if no live network here overlaps it; else the first default that none overlaps. */
async function chooseSubnet(stateDir: string, id: string, asked: string | undefined): Promise<Subnet> {
    const others = await liveNetworks(stateDir, id);
    const clash = (s: Subnet) => others.find((o) => subnetsOverlap(s, parseSubnet(o.subnet) as Subnet));
    if (asked !== undefined) {
        const s = parseSubnet(asked) as Subnet;
        const other = clash(s);
        if (other) {
            throw new InputError([
                {
                    property: "subnet",
                    reason: `subnet ${asked} overlaps ${other.subnet} of network ${other.id} in the same state directory; choose a subnet apart from it (a VM on both could not route)`,
                },
            ]);
        }
        return s;
    }
    for (let attempt = 0; attempt < DEFAULT_SUBNET_ATTEMPTS; attempt++) {
        const s = defaultSubnet(id, attempt);
        if (!clash(s)) return s;
    }
    throw new Error(
        `no default /24 in 10.64.0.0/10 is free of the ${others.length} live networks in ${stateDir}; set subnet`,
    );
}

function identityOf(props: NetworkOutputs): ProcessIdentity {
    return { pid: props.pid, startTime: props.processStartTime, bootId: props.bootId };
}

/**
 * A switch that died, or a pid now held by another process, is reported gone so the next `up`
 * makes a new network. Its files go too: once Pulumi forgets the network nothing else would
 * remove them, and its VMs see the missing record as drift all the same.
 */
async function readHere(id: string, props: NetworkOutputs): Promise<pulumi.dynamic.ReadResult> {
    requireState("Network", "read", props, NETWORK_STATE);
    const rec = await readRecordAt(props.networkDir).catch(() => undefined);
    if (!rec || rec.id !== id) return { id: "", props: {} };
    const live = await checkOurSwitch(identityOf(props), props.pidfile);
    if (!live.alive) {
        if (!(await recordedSwitchRuns(rec))) {
            await stopDhcp(undefined, props.networkDir).catch(() => undefined);
            await removeNetworkDir(props.networkDir);
        }
        return { id: "", props: {} };
    }
    const { dhcpDrift: _was, ...rest } = props;
    const drift = await dhcpProblem(props);
    return { id, props: drift ? { ...rest, dhcpDrift: drift } : rest };
}

/** Whether the switch the network's own record names still runs (then its files stay, whatever the state says). */
async function recordedSwitchRuns(rec: NetworkRecord | undefined): Promise<boolean> {
    return rec !== undefined && (await checkOurSwitch(rec.switchIdentity, rec.pidfile)).alive;
}

/**
 * Stops the switch only if it is still the process the state recorded, then removes the files
 * the provider made — unless a switch its record names still runs there (a state that lost
 * track of it), whose sockets are left alone.
 */
async function removeHere(_id: string, props: NetworkOutputs): Promise<void> {
    requireState("Network", "delete", props, NETWORK_STATE);
    // The server first: its plug would otherwise see the switch vanish under it.
    await stopDhcp(props.dhcpIdentity, props.networkDir);
    await stopSwitch(identityOf(props), props.pidfile);
    if (await recordedSwitchRuns(await readRecordAt(props.networkDir).catch(() => undefined))) return;
    await removeNetworkDir(props.networkDir);
}

/**
 * A create that crashed between making its directory and writing the record left a directory
 * nobody's state names, perhaps with a switch running: stop that switch (only if it is still the
 * vde_switch writing that pidfile) and remove what the provider made.
 */
async function cleanOrphans(parent: string): Promise<void> {
    for (const name of await readdir(parent).catch(() => [] as string[])) {
        if (!/^[A-Za-z0-9_.-]{1,16}-[A-Za-z0-9]{6}$/.test(name)) continue;
        const dir = path.join(parent, name);
        const st = await stat(dir).catch(() => undefined);
        if (!st?.isDirectory() || Date.now() - st.mtimeMs < ORPHAN_AGE_MS) continue;
        if ((await readRecordAt(dir).catch(() => "unreadable")) !== undefined) continue;
        const { pidfile } = switchPaths(dir);
        const pid = await readPidfile(pidfile);
        const identity = pid === undefined ? undefined : await identify(pid);
        if (identity) await stopSwitch(identity, pidfile).catch(() => undefined);
        await stopDhcp(undefined, dir).catch(() => undefined);
        await removeNetworkDir(dir).catch(() => undefined);
    }
}

async function removeNetworkDir(networkDir: string): Promise<void> {
    // `networks/<id>` swapped for a link would send these deletes elsewhere: leave it.
    if (!(await ownDirChain(path.dirname(path.dirname(networkDir)), networkDir)).ok) return;
    await removeSwitchFiles(networkDir);
    await removeDhcpFiles(networkDir);
    await removeLeases(networkDir);
    await rm(recordPath(networkDir), { force: true });
    await removeDirIfEmpty(networkDir);
}

// ---------------------------------------------------------------------------------------------
// The lifecycle as the plugin, the dynamic shims and a far host's runner call it: placed where its `host` says (placement.ts).

export const { check, diff, create, read, update, remove } = placed("Network", {
    check: checkHere,
    diff: diffHere,
    create: createHere,
    read: readHere,
    update: updateHere,
    remove: removeHere,
});
