import { lstat } from "node:fs/promises";
import * as path from "node:path";
import { AGENT_PORT_NAMES } from "../../core/qemuArgv";
import { checkOurDaemon, identify, readCmdline, readPidfile } from "../../host/qemu/qemuProcess";
import { ownDirChain, resolveStateDir } from "../../host/files/stateDir";
import { VM_FILES } from "./record";

/**
 * A VirtualMachine named by its id alone (GuestCommand's `vm: "<id>"`): the id is the name of
 * the VM's directory under `<stateDir>/vms/`, and everything a guest channel needs is found
 * there — the sockets, the serial log, and the running QEMU, known again by its pidfile and
 * identified (pid + start time + boot id) before it is trusted.
 */

export interface VmById {
    id: string;
    vmDir: string;
    agent: "qga" | "shell";
    agentSocket: string;
    qmpSocket: string;
    serialLog: string;
    pid: number;
    processStartTime: string;
    bootId: string;
    pidfile: string;
}

/** A VM id is a plain directory name: no separators, no `.`/`..`, nothing a path could climb with. */
export const VM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class VmByIdError extends Error {
    constructor(message: string) {
        super(message);
        this.name = "VmByIdError";
    }
}

export async function resolveVmById(id: string, stateDirInput?: string): Promise<VmById> {
    if (!VM_ID_PATTERN.test(id)) {
        throw new VmByIdError(
            `vm: ${JSON.stringify(id)} is not a VirtualMachine id (the name of its directory under <stateDir>/vms, like vm-AbC123); pass the id or the VirtualMachine's outputs`,
        );
    }
    const stateDir = resolveStateDir(stateDirInput);
    const vms = path.join(stateDir, "vms");
    const vmDir = path.join(vms, id);
    const own = await ownDirChain(stateDir, vmDir);
    if (!own.ok) {
        throw new VmByIdError(
            `vm: no VirtualMachine ${id} under ${vms} (${own.why}); check the id, and set stateDir to the state directory the VirtualMachine was created with`,
        );
    }
    const f = (name: string) => path.join(vmDir, name);
    const pidfile = f(VM_FILES.pidfile);
    const pid = await readPidfile(pidfile);
    const identity = pid === undefined ? undefined : await identify(pid);
    if (!identity)
        throw new VmByIdError(
            `vm: the VirtualMachine ${id} is not running (no live QEMU in ${pidfile}); run pulumi up to start it again`,
        );
    const live = await checkOurDaemon(identity, pidfile);
    if (!live.alive)
        throw new VmByIdError(
            `vm: the VirtualMachine ${id} is not running (${live.reason}); run pulumi up to start it again`,
        );
    // Which agent QEMU runs is in its command line (the virtserialport's name), not in a file anyone could edit.
    const cmdline = (await readCmdline(identity.pid)) ?? [];
    const agent = (Object.keys(AGENT_PORT_NAMES) as (keyof typeof AGENT_PORT_NAMES)[]).find((k) =>
        cmdline.some((a) => a.includes(`name=${AGENT_PORT_NAMES[k]}`)),
    );
    const agentSocket = f(VM_FILES.agentSocket);
    if (!agent || !(await isSocket(agentSocket))) {
        throw new VmByIdError(
            `vm: the VirtualMachine ${id} has no guest agent channel: set its vm.agent to "shell" or "qga" (and recreate it) for GuestCommand`,
        );
    }
    return {
        id,
        vmDir,
        agent,
        agentSocket,
        qmpSocket: f(VM_FILES.qmpSocket),
        serialLog: f(VM_FILES.serialLog),
        pid: identity.pid,
        processStartTime: identity.startTime,
        bootId: identity.bootId,
        pidfile,
    };
}

async function isSocket(file: string): Promise<boolean> {
    try {
        return (await lstat(file)).isSocket();
    } catch {
        return false;
    }
}
