import { open, readdir, readFile, stat } from "node:fs/promises";
import * as path from "node:path";
import * as readline from "node:readline";
import { AGENT_PORT_NAMES, nameFromConfigText } from "../provider/core/qemuArgv";
import { shellQuote } from "../provider/core/shellQuote";
import { checkOurDaemon, identify, readCmdline, readPidfile } from "../provider/host/qemu/qemuProcess";
import { QmpClient } from "../provider/host/qemu/qmp";
import { ownDirChain, resolveStateDir } from "../provider/host/files/stateDir";
import { openAgentChannel } from "../provider/resources/virtualMachine/agentChannel";
import { VM_ID_PATTERN } from "../provider/resources/virtualMachine/byId";
import { VM_FILES } from "../provider/resources/virtualMachine/record";

/**
 * `npx pulumi-qemu`: look at the VMs of a state directory by hand, to debug a failed test
 * whose fleet was kept running. `list` shows them; `console` follows one's serial log (QEMU
 * writes the serial port to a file, so it is read-only); `shell` is a prompt whose lines run in
 * the guest over its agent channel (each in its own session, like `machine.execute`); `qmp` is
 * a QMP prompt. A VM is named by its id (the directory under <stateDir>/vms) or its vm.name.
 * Everything is found in the VM's directory and its QEMU is identified (pid + start time + boot
 * id + the pidfile on its command line) before anything is sent to it.
 */

export interface FoundVm {
    id: string;
    /** vm.name, from QEMU's command line (-name), when it has one. */
    name?: string;
    vmDir: string;
    running: boolean;
    /** Why it is not running. */
    reason?: string;
    pid?: number;
    processStartTime?: string;
    bootId?: string;
    agent?: "qga" | "shell";
    qmpSocket: string;
    serialLog: string;
    agentSocket: string;
    pidfile: string;
    /** Where a stack's outputs hold it ("web", "fleet.db[0]"; a VM exported twice has two), when listed from them (--outputs). */
    outputs?: string[];
}

export const USAGE = `usage: pulumi-qemu <command> [--state-dir DIR | --outputs FILE] [VM]

  list                 the VMs of the state directory: id, name, running or not, agent
  console VM           follow VM's serial console (its log; read-only), until Ctrl-C
  shell VM             a prompt that runs each line in the guest over its agent channel
  qmp VM               a QMP prompt: "query-status", or "command {json arguments}"

VM is the VM's id (the directory under <state dir>/vms) or its vm.name. The state directory is
--state-dir, else $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else
~/.local/state/pulumi-qemu.

--outputs FILE takes the VMs from a stack's outputs instead, as \`pulumi stack output --json\`
prints them (FILE "-" reads standard input): every exported VirtualMachine (or object with its
vmDir and qmpSocket), named also by the output that holds it, e.g.
  pulumi stack output --json | npx pulumi-qemu list --outputs -`;

/** The VMs under `<stateDir>/vms`, running or not, sorted by name then id. */
export async function listVms(stateDirInput?: string): Promise<FoundVm[]> {
    const stateDir = resolveStateDir(stateDirInput);
    const vms = path.join(stateDir, "vms");
    const ids = (await readdir(vms).catch(() => [] as string[])).filter((n) => VM_ID_PATTERN.test(n));
    const found: FoundVm[] = [];
    for (const id of ids) {
        const vmDir = path.join(vms, id);
        if (!(await ownDirChain(stateDir, vmDir)).ok) continue;
        found.push(await describeVm(id, vmDir));
    }
    return found.sort((a, b) => (a.name ?? "").localeCompare(b.name ?? "") || a.id.localeCompare(b.id));
}

async function describeVm(id: string, vmDir: string): Promise<FoundVm> {
    const f = (name: string) => path.join(vmDir, name);
    const base = {
        id,
        vmDir,
        qmpSocket: f(VM_FILES.qmpSocket),
        serialLog: f(VM_FILES.serialLog),
        agentSocket: f(VM_FILES.agentSocket),
        pidfile: f(VM_FILES.pidfile),
    };
    const pid = await readPidfile(base.pidfile);
    const identity = pid === undefined ? undefined : await identify(pid);
    if (!identity) return { ...base, running: false, reason: "no live QEMU in its pidfile" };
    const live = await checkOurDaemon(identity, base.pidfile);
    if (!live.alive) return { ...base, running: false, reason: live.reason };
    // What QEMU runs is read from its command line, not from a file anyone could edit.
    const cmdline = (await readCmdline(identity.pid)) ?? [];
    const name = await vmName(cmdline, f(VM_FILES.nameConfig));
    const agent = (Object.keys(AGENT_PORT_NAMES) as (keyof typeof AGENT_PORT_NAMES)[]).find((k) =>
        cmdline.some((a) => a.includes(`name=${AGENT_PORT_NAMES[k]}`)),
    );
    return {
        ...base,
        running: true,
        pid: identity.pid,
        processStartTime: identity.startTime,
        bootId: identity.bootId,
        ...(name ? { name } : {}),
        ...(agent ? { agent } : {}),
    };
}

/**
 * The name QEMU was given: `-name` on its command line, or (as the provider starts VMs, to keep
 * a name out of `ps`) the owner-only config file it read with `-readconfig`, when that is the one
 * in the VM's own directory.
 */
async function vmName(cmdline: string[], nameConfig: string): Promise<string | undefined> {
    const at = cmdline.indexOf("-name");
    if (at >= 0) return cmdline[at + 1]?.replace(/,,/g, ",");
    const conf = cmdline.indexOf("-readconfig");
    if (conf < 0 || cmdline[conf + 1] !== nameConfig) return undefined;
    const text = await readFile(nameConfig, "utf8").catch(() => undefined);
    return text === undefined ? undefined : nameFromConfigText(text);
}

/** Objects this deep in a stack's outputs are not looked into: outputs are data, not a maze. */
const OUTPUTS_DEPTH = 8;

/**
 * The VMs a stack's outputs hold (`pulumi stack output --json`, or the Automation API's
 * `{ value, secret }` per output): every object with a string vmDir and qmpSocket, named by its
 * path in the outputs. Each is then looked at in its own directory, as `list` does, and its
 * QEMU identified; nothing is taken on the file's word but where to look.
 */
export async function listVmsFromOutputs(outputs: unknown): Promise<FoundVm[]> {
    // By directory: a VM exported under two outputs is one VM, named by both.
    const places = new Map<string, string[]>();
    const walk = (v: unknown, at: string, depth: number) => {
        if (depth > OUTPUTS_DEPTH || typeof v !== "object" || v === null) return;
        if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${at}[${i}]`, depth + 1));
        const o = v as Record<string, unknown>;
        if (typeof o.vmDir === "string" && typeof o.qmpSocket === "string") {
            places.set(o.vmDir, [...(places.get(o.vmDir) ?? []), at]);
            return;
        }
        // An Automation API output, { value, secret }: the value is the output itself.
        const keys = Object.keys(o);
        if ("value" in o && keys.every((k) => k === "value" || k === "secret")) return walk(o.value, at, depth);
        for (const k of keys) walk(o[k], at ? `${at}.${k}` : k, depth + 1);
    };
    walk(outputs, "", 0);
    const found: FoundVm[] = [];
    for (const [vmDir, outputs] of places) {
        const id = path.basename(vmDir);
        const stateDir = path.dirname(path.dirname(vmDir));
        const where = { id, vmDir, outputs };
        if (!path.isAbsolute(vmDir) || !VM_ID_PATTERN.test(id) || path.basename(path.dirname(vmDir)) !== "vms") {
            found.push({ ...describeNothing(where), reason: `${vmDir} is not a VM directory of a state directory` });
            continue;
        }
        const chain = await ownDirChain(stateDir, vmDir);
        if (!chain.ok) {
            found.push({ ...describeNothing(where), reason: `not looked into: ${chain.why}` });
            continue;
        }
        found.push({ ...(await describeVm(id, vmDir)), outputs });
    }
    return found;
}

/** A VM found in outputs that is not looked at any further. */
function describeNothing(where: { id: string; vmDir: string; outputs: string[] }): FoundVm {
    const f = (name: string) => path.join(where.vmDir, name);
    return {
        ...where,
        running: false,
        qmpSocket: f(VM_FILES.qmpSocket),
        serialLog: f(VM_FILES.serialLog),
        agentSocket: f(VM_FILES.agentSocket),
        pidfile: f(VM_FILES.pidfile),
    };
}

/** Reads a stack's outputs as JSON from a file, or from standard input for "-". */
export async function readOutputsFile(file: string, stdin: NodeJS.ReadableStream): Promise<unknown> {
    let text: string;
    if (file === "-") {
        const chunks: Buffer[] = [];
        for await (const c of stdin) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
        text = Buffer.concat(chunks).toString("utf8");
    } else text = await readFile(file, "utf8");
    try {
        return JSON.parse(text);
    } catch (e) {
        throw new Error(
            `--outputs ${file}: not JSON (${(e as Error).message}); give it what \`pulumi stack output --json\` prints`,
        );
    }
}

/** Where the VMs are looked for: a state directory, or a stack's outputs. */
export type VmSource = { stateDir?: string } | { outputs: unknown; from: string };

function vmsOf(source: VmSource): Promise<FoundVm[]> {
    return "outputs" in source ? listVmsFromOutputs(source.outputs) : listVms(source.stateDir);
}

/** One running VM by id or name (or, from outputs, the output holding it); errors list what there is. */
export async function findVm(ref: string, from: VmSource = {}): Promise<FoundVm> {
    const all = await vmsOf(from);
    const matches = all.filter((v) => v.id === ref || v.name === ref || v.outputs?.includes(ref));
    const known =
        all
            .map((v) => {
                const label = v.outputs?.join(", ") ?? v.name;
                return label ? `${label} (${v.id})` : v.id;
            })
            .join(", ") || "none";
    const place = "outputs" in from ? `the outputs in ${from.from}` : path.join(resolveStateDir(from.stateDir), "vms");
    if (!matches.length) throw new Error(`no VM ${JSON.stringify(ref)} in ${place} (VMs there: ${known})`);
    if (matches.length > 1)
        throw new Error(
            `${matches.length} VMs are named ${JSON.stringify(ref)}: ${matches.map((v) => v.id).join(", ")}; name one by its id`,
        );
    const vm = matches[0];
    if (!vm.running) throw new Error(`VM ${ref} (${vm.id}) is not running: ${vm.reason}`);
    return vm;
}

export function formatList(vms: FoundVm[]): string {
    if (!vms.length) return "no VMs\n";
    // From a stack's outputs, the output that holds each VM comes first: it is what the user exported.
    const fromOutputs = vms.some((v) => v.outputs !== undefined);
    const rows = [
        [...(fromOutputs ? ["OUTPUT"] : []), "ID", "NAME", "STATE", "AGENT", "PID"],
        ...vms.map((v) => [
            ...(fromOutputs ? [v.outputs?.join(",") ?? "-"] : []),
            v.id,
            v.name ?? "-",
            v.running ? "running" : `stopped (${v.reason})`,
            v.agent ?? "-",
            v.pid ? String(v.pid) : "-",
        ]),
    ];
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    return (
        rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n") + "\n"
    );
}

/** The exact command that opens `kind` on the VM with these outputs: what a kept fleet prints. */
export function attachCommand(
    kind: "shell" | "qmp" | "console",
    outputs: { vmDir: string; stateDir?: string },
): string {
    const vms = path.dirname(outputs.vmDir);
    const stateDir = outputs.stateDir ?? path.dirname(vms);
    return `npx pulumi-qemu ${kind} --state-dir ${shellQuote(stateDir)} ${shellQuote(path.basename(outputs.vmDir))}`;
}

export interface Io {
    input: NodeJS.ReadableStream;
    output: NodeJS.WritableStream;
    /** Where errors go (stderr); defaults to output. */
    errors?: NodeJS.WritableStream;
}

/** Runs each line typed in the guest; prints its stdout, stderr and a non-zero exit. Ends at EOF or "exit". */
export async function shellPrompt(vm: FoundVm, io: Io): Promise<void> {
    if (!vm.agent)
        throw new Error(`VM ${vm.name ?? vm.id} has no guest agent channel (vm.agent is "none"): use console or qmp`);
    const channel = openAgentChannel({ ...vm, agent: vm.agent });
    const label = `${vm.name ?? vm.id}# `;
    try {
        await prompt(io, label, async (line) => {
            if (line.trim() === "exit") return false;
            if (!line.trim()) return true;
            const r = await channel.execute(line, { timeoutSeconds: 600 });
            io.output.write(r.stdout);
            (io.errors ?? io.output).write(r.stderr);
            if (r.exitCode !== 0) io.output.write(`[exit ${r.exitCode}]\n`);
            return true;
        });
    } finally {
        channel.close();
    }
}

/** A QMP prompt: `command` or `command {"json": "arguments"}` per line; prints each answer as JSON. */
export async function qmpPrompt(vm: FoundVm, io: Io): Promise<void> {
    const qmp = await QmpClient.connect(vm.qmpSocket, { connectTimeoutMs: 5000, commandTimeoutMs: 60_000 });
    try {
        await prompt(io, "(qmp) ", async (line) => {
            const text = line.trim();
            if (text === "exit" || text === "quit-prompt") return false;
            if (!text) return true;
            const m = /^([A-Za-z0-9_-]+)\s*(.*)$/s.exec(text);
            if (!m) {
                io.output.write(
                    'type a QMP command and optional JSON arguments, e.g. query-status or block_set_io_throttle {"device": "virtio0", ...}\n',
                );
                return true;
            }
            let args: Record<string, unknown> | undefined;
            if (m[2]) {
                try {
                    args = JSON.parse(m[2]);
                } catch (e) {
                    io.output.write(`the arguments are not JSON: ${(e as Error).message}\n`);
                    return true;
                }
            }
            io.output.write(JSON.stringify(await qmp.execute(m[1], args), null, 2) + "\n");
            return true;
        });
    } finally {
        qmp.close();
    }
}

/** Prints the serial log so far and then what QEMU appends, until `signal` aborts. */
export async function followConsole(vm: FoundVm, output: NodeJS.WritableStream, signal?: AbortSignal): Promise<void> {
    const fh = await open(vm.serialLog, "r");
    try {
        let at = 0;
        while (!signal?.aborted) {
            const size = (await stat(vm.serialLog)).size;
            while (at < size) {
                const buf = Buffer.alloc(Math.min(64 * 1024, size - at));
                const { bytesRead } = await fh.read(buf, 0, buf.length, at);
                if (!bytesRead) break;
                output.write(buf.subarray(0, bytesRead));
                at += bytesRead;
            }
            await new Promise((r) => setTimeout(r, 200));
        }
    } finally {
        await fh.close();
    }
}

/** Reads lines, one at a time (each waits for the last to finish), until EOF or `handle` returns false. */
async function prompt(io: Io, label: string, handle: (line: string) => Promise<boolean>): Promise<void> {
    const rl = readline.createInterface({ input: io.input, terminal: false });
    const lines = rl[Symbol.asyncIterator]();
    try {
        for (;;) {
            io.output.write(label);
            const next = await lines.next();
            if (next.done) break;
            try {
                if (!(await handle(next.value))) break;
            } catch (e) {
                (io.errors ?? io.output).write(`error: ${(e as Error).message}\n`);
            }
        }
    } finally {
        rl.close();
    }
    io.output.write("\n");
}

/** The command line: returns the exit code. */
export async function main(argv: string[], io: Io & { errors: NodeJS.WritableStream }): Promise<number> {
    const args = [...argv];
    const flag = (name: string, what: string): string | undefined | null => {
        const at = args.indexOf(name);
        if (at < 0) return undefined;
        const value = args[at + 1];
        if (!value) {
            io.errors.write(`${name} needs ${what}\n`);
            return null;
        }
        args.splice(at, 2);
        return value;
    };
    const stateDir = flag("--state-dir", "a directory");
    const outputsFile = flag("--outputs", 'a file (or "-" for standard input) of `pulumi stack output --json`');
    if (stateDir === null || outputsFile === null) return 2;
    if (stateDir !== undefined && outputsFile !== undefined) {
        io.errors.write("--state-dir and --outputs each say where the VMs are: give one\n");
        return 2;
    }
    const [command, ref, ...rest] = args;
    if (!command || command === "help" || command === "--help" || command === "-h") {
        io.output.write(USAGE + "\n");
        return command ? 0 : 2;
    }
    try {
        if (outputsFile === "-" && (command === "shell" || command === "qmp"))
            throw new Error(`--outputs - reads standard input, which the ${command} prompt needs: give a file`);
        const source: VmSource =
            outputsFile !== undefined
                ? { outputs: await readOutputsFile(outputsFile, io.input), from: outputsFile }
                : { stateDir };
        if (command === "list") {
            io.output.write(formatList(await vmsOf(source)));
            return 0;
        }
        if (!["console", "shell", "qmp"].includes(command)) {
            io.errors.write(`unknown command ${JSON.stringify(command)}\n${USAGE}\n`);
            return 2;
        }
        if (!ref || rest.length) {
            io.errors.write(`${command} takes one VM (its id or name)\n${USAGE}\n`);
            return 2;
        }
        const vm = await findVm(ref, source);
        if (command === "shell") await shellPrompt(vm, io);
        else if (command === "qmp") await qmpPrompt(vm, io);
        else {
            const stop = new AbortController();
            process.once("SIGINT", () => stop.abort());
            await followConsole(vm, io.output, stop.signal);
        }
        return 0;
    } catch (e) {
        io.errors.write(`pulumi-qemu ${command}: ${(e as Error).message}\n`);
        return 1;
    }
}
