import { checkOurDaemon, type Liveness, type ProcessIdentity } from "../../host/qemu/qemuProcess";
import type { Diagnose, GuestChannel } from "../../host/guest/guestChannel";
import { qmpOnce } from "../../host/qemu/qmp";
import { QgaChannel } from "../../host/guest/qgaChannel";
import { ShellChannel } from "../../host/guest/shellChannel";
import { serialTail } from "./ready";

/**
 * The guest channel of a VirtualMachine, from its outputs. Errors from it say whether QEMU is
 * gone, the VM is paused or the guest just does not answer, with the tail of the serial log.
 */

/** The VirtualMachine outputs a channel needs (a stack's outputs carry them). */
export interface AgentTarget {
    agent?: "qga" | "shell";
    agentSocket?: string;
    qmpSocket: string;
    serialLog: string;
    pid?: number;
    processStartTime?: string;
    bootId?: string;
    pidfile?: string;
}

/**
 * How a diagnosis looks at the VM: by default on this machine (its /proc, the QMP socket, the
 * serial log); for a VM on a far host, through the SSH connection (virtualMachine/site.ts).
 */
export interface VmProbe {
    /** Where the VM is, for messages ("host ssh://…"); left out for this machine. */
    where?: string;
    liveness(identity: ProcessIdentity, pidfile: string): Promise<Liveness>;
    qmp(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
    serialTail(): Promise<string>;
}

function localProbe(target: AgentTarget): VmProbe {
    return {
        liveness: checkOurDaemon,
        qmp: (command, args, timeoutMs) => qmpOnce(target.qmpSocket, command, args, timeoutMs),
        serialTail: () => serialTail(target.serialLog),
    };
}

/** `via`: the agent socket as reachable from here and the probe to diagnose with (a VM on a far host). */
export function openAgentChannel(target: AgentTarget, via?: { socket: string; probe: VmProbe }): GuestChannel {
    if (!target.agent || !target.agentSocket) {
        throw new Error(
            'this VM has no guest agent channel: set vm.agent to "shell" (with our shell agent in the guest) or "qga" (with qemu-guest-agent) and recreate it',
        );
    }
    const diagnose = diagnoser(target, via?.probe);
    const socket = via?.socket ?? target.agentSocket;
    if (target.agent === "shell") return new ShellChannel(socket, { diagnose });
    return new QgaChannel(socket, { diagnose });
}

export function diagnoser(target: AgentTarget, probe: VmProbe = localProbe(target)): Diagnose {
    const on = probe.where ? ` on ${probe.where}` : "";
    return async () =>
        `${await vmState(target, probe)}. Last lines of the serial console (${target.serialLog}${on}):\n${await probe.serialTail()}`;
}

async function vmState(target: AgentTarget, probe: VmProbe): Promise<string> {
    const gone = async (): Promise<string | undefined> => {
        if (target.pid === undefined || !target.processStartTime || !target.bootId || !target.pidfile) return undefined;
        const live = await probe.liveness(
            { pid: target.pid, startTime: target.processStartTime, bootId: target.bootId },
            target.pidfile,
        );
        return live.alive ? undefined : `The guest is gone: QEMU is not running (${live.reason})`;
    };
    const already = await gone();
    if (already) return already;
    let status: string;
    try {
        status = ((await probe.qmp("query-status", undefined, 3000)) as { status: string }).status;
    } catch (err) {
        // A QEMU on its way out (the guest rebooted or powered off) closes QMP before it exits.
        for (let i = 0; i < 20; i++) {
            await new Promise((r) => setTimeout(r, 100));
            const now = await gone();
            if (now) return now;
        }
        return `QEMU is still running but QMP at ${target.qmpSocket}${probe.where ? ` on ${probe.where}` : ""} does not answer (${(err as Error).message}): it is stuck, or another client holds QMP`;
    }
    if (status === "paused") return "The VM is paused (QMP status paused): resume it with QMP cont";
    if (status === "running")
        return `The VM is running but the guest's ${target.agent ?? ""} agent is not answering (is it installed and started in the guest?)`;
    return `The VM is not running (QMP status ${status})`;
}
