import { mkdir, readFile } from "node:fs/promises";
import * as path from "node:path";
import { hashValue } from "../../core/hash";
import type { VmSpec } from "../../core/vmSpec";
import { writeFileAtomic } from "../../host/files/atomicFile";
import { hostPortProblem, pickFreePort } from "../../host/net/ports";

/**
 * Host ports the provider picks for `portForwards` entries without `host`. A picked port is
 * remembered under `<stateDir>/ports/`, keyed by the VM's name, guest port, protocol and host
 * address, so that a VM made again (after drift, or a replace) gets its old port back when it
 * is free; when it is not, it gets a new one and `portsNote` says so. Picked ports never enter
 * the argv hash: the hash sees "auto", so a no-op diff stays a no-op.
 */

const PICK_ATTEMPTS = 20;

export interface PickedPorts {
    /** By portForwards index. */
    hostPorts: Record<number, number>;
    note?: string;
}

/** Picks a port for each forward without one; `avoid` are ports already known to be bad (a clash at start). */
export async function pickHostPorts(
    spec: VmSpec,
    stateDir: string,
    avoid: ReadonlySet<number> = new Set(),
): Promise<PickedPorts> {
    const hostPorts: Record<number, number> = {};
    const notes: string[] = [];
    const taken = new Set<number>([
        ...avoid,
        ...spec.portForwards.flatMap((pf) => (pf.host === undefined ? [] : [pf.host])),
    ]);
    for (const [i, pf] of spec.portForwards.entries()) {
        if (pf.host !== undefined) continue;
        const field = `vm.portForwards[${i}].host`;
        const memo = spec.name !== undefined ? memoFile(stateDir, spec.name, pf) : undefined;
        const before = memo ? await readMemo(memo) : undefined;
        let port: number | undefined;
        if (
            before !== undefined &&
            !taken.has(before) &&
            !(await hostPortProblem({ port: before, address: pf.hostAddress, protocol: pf.protocol, field }))
        ) {
            port = before;
        }
        for (let attempt = 0; port === undefined && attempt < PICK_ATTEMPTS; attempt++) {
            const candidate = await pickFreePort(pf.hostAddress).catch((err: Error) => {
                throw new Error(`${field}: no free port can be picked on ${pf.hostAddress}: ${err.message}`);
            });
            if (taken.has(candidate)) continue;
            // The pick is made with TCP; a UDP forward needs the port free for UDP too.
            if (
                pf.protocol === "udp" &&
                (await hostPortProblem({ port: candidate, address: pf.hostAddress, protocol: "udp", field }))
            )
                continue;
            port = candidate;
        }
        if (port === undefined)
            throw new Error(
                `${field}: no free ${pf.protocol} port found on ${pf.hostAddress} after ${PICK_ATTEMPTS} tries`,
            );
        if (before !== undefined && before !== port)
            notes.push(`${field}: host port ${before}, used before, is taken; picked ${port}`);
        taken.add(port);
        hostPorts[i] = port;
        if (memo) await writeMemo(memo, port);
    }
    return { hostPorts, note: notes.length ? notes.join("; ") : undefined };
}

/** The forwards' host ports (picked or asked) keyed by guest port ("80", "53/udp"), and their endpoints. */
export function portOutputs(
    spec: VmSpec,
    hostPorts: Record<number, number>,
): { ports: Record<string, number>; endpoints: Record<string, string> } | undefined {
    if (spec.portForwards.length === 0) return undefined;
    const ports: Record<string, number> = {};
    const endpoints: Record<string, string> = {};
    for (const [i, pf] of spec.portForwards.entries()) {
        const key = pf.protocol === "tcp" ? String(pf.guest) : `${pf.guest}/${pf.protocol}`;
        const port = pf.host ?? hostPorts[i];
        if (key in ports) continue;
        ports[key] = port;
        // A wildcard bind is reached on loopback.
        endpoints[key] = `${pf.hostAddress === "0.0.0.0" ? "127.0.0.1" : pf.hostAddress}:${port}`;
    }
    return { ports, endpoints };
}

function memoFile(stateDir: string, vmName: string, pf: VmSpec["portForwards"][number]): string {
    const key = hashValue({ vm: vmName, guest: pf.guest, protocol: pf.protocol, address: pf.hostAddress }).slice(0, 24);
    return path.join(stateDir, "ports", key);
}

async function readMemo(file: string): Promise<number | undefined> {
    try {
        const n = Number((await readFile(file, "utf8")).trim());
        return Number.isInteger(n) && n > 0 && n < 65536 ? n : undefined;
    } catch {
        return undefined;
    }
}

async function writeMemo(file: string, port: number): Promise<void> {
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, `${port}\n`);
}
