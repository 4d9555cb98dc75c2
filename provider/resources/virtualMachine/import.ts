import * as path from "node:path";
import { acceptedArgvHashes } from "../../core/qemuArgv";
import { parseVmSpec } from "../../core/vmSpec";
import { checkOurDaemon, identify, readPidfile } from "../../host/qemu/qemuProcess";
import { ownDirChain, resolveStateDir } from "../../host/files/stateDir";
import { StateError } from "../stateGuard";
import type { VirtualMachineOutputs } from "./state";
import { readVmRecord, VM_FILES } from "./record";

/**
 * `pulumi import qemu:index:VirtualMachine NAME ID` (and the `import` resource option) call Read
 * with an id and no state. A VM pulumi-qemu started keeps, in its directory's record
 * (`<stateDir>/vms/<id>/record.json`, owner-only), the inputs it was made from and the outputs
 * create returned; a running one is adopted from there, after its QEMU is known again by pid,
 * start time, boot id and command line. The inputs come back too, so the program (or the code
 * `pulumi import` generates) declares the same VM and the next `up` changes nothing.
 *
 * The id is the VM's id (`vm-AbC123`) when it lives in the default state directory
 * (PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu),
 * or the absolute path of its directory, `<stateDir>/vms/vm-AbC123`, for any state directory.
 *
 * Only a running VM with a complete record of ours is adopted: delete stops and removes what it
 * adopts, and the provider never deletes what it did not make.
 */

/** mkdtemp's `vm-` and six characters: the only names create gives a VM directory. */
const VM_DIR_NAME = /^vm-[A-Za-z0-9]{6}$/;

export interface VmToImport {
    id: string;
    outs: VirtualMachineOutputs;
    inputs: Record<string, unknown>;
}

export async function findVmToImport(id: string): Promise<VmToImport> {
    const refuse = (why: string, fix: string) =>
        new StateError(`import of VirtualMachine ${JSON.stringify(id)}: ${why}. ${fix} Nothing was touched.`);
    const { vmId, stateDir } = placeOf(id);
    if (!vmId) {
        throw refuse(
            "the id of a VirtualMachine is its id, like vm-AbC123 (for a VM in the default state directory), or the absolute path of its directory, <stateDir>/vms/vm-AbC123",
            "Pass one of those, e.g. `pulumi import qemu:index:VirtualMachine NAME vm-AbC123` (the id is the name of the VM's directory under <stateDir>/vms).",
        );
    }
    const vmDir = path.join(stateDir, "vms", vmId);
    const own = await ownDirChain(stateDir, vmDir);
    if (!own.ok) {
        throw refuse(
            `there is no VM directory of this user at ${vmDir} (${own.why})`,
            "Check the id; a VM in a state directory other than the default one is imported by the absolute path <stateDir>/vms/<id>.",
        );
    }
    const record = await readVmRecord(vmDir);
    if (!record) {
        throw refuse(
            `${vmDir} has no pulumi-qemu record of this user (record.json, which create writes first), so pulumi-qemu did not make it and will not adopt it (destroy would stop and delete it)`,
            "Leave it as it is, or declare a new VirtualMachine.",
        );
    }
    if (record.state === "creating") {
        throw refuse(
            "a pulumi-qemu create of this VM has not finished (or was killed; the next create in this state directory then cleans it up)",
            "Wait for the create to finish, then import again.",
        );
    }
    if (record.state === "dead") {
        throw refuse(
            `it is not running: a refresh found its QEMU gone${record.diedAt ? ` (${record.diedAt})` : ""} and kept only its serial log`,
            "Declare the VirtualMachine without `import` and let `pulumi up` start a new one.",
        );
    }
    // Found again as GuestCommand finds a VM: the pidfile's process, if it is still the QEMU started on it.
    const pidfile = path.join(vmDir, VM_FILES.pidfile);
    const pid = await readPidfile(pidfile);
    const running = pid === undefined ? undefined : await identify(pid);
    const live = running
        ? await checkOurDaemon(running, pidfile)
        : { alive: false as const, reason: `no live process in ${pidfile}` };
    if (!running || !live.alive) {
        throw refuse(
            `it is not running (${live.alive ? "" : live.reason})`,
            `Declare the VirtualMachine without \`import\` and let \`pulumi up\` start a new one; ${vmDir} keeps its serial log until you remove it.`,
        );
    }
    const outs = record.outputs as VirtualMachineOutputs | undefined;
    const inputs = record.inputs as Record<string, unknown> | undefined;
    if (
        outs === undefined ||
        inputs === undefined ||
        outs === null ||
        typeof outs !== "object" ||
        inputs === null ||
        typeof inputs !== "object"
    ) {
        throw refuse(
            record.withheld
                ? `its record does not hold the inputs it was made from: ${record.withheld}`
                : "its record was written by an older pulumi-qemu, which did not keep the inputs the VM was made from, so its state cannot be rebuilt",
            `Declare the VirtualMachine without \`import\` and let \`pulumi up\` start a new one; this one keeps running until you stop it (pid ${running.pid}, in ${pidfile}), which you must first if the new one needs its ports or disks.`,
        );
    }
    const f = (name: string) => path.join(vmDir, name);
    // The files delete acts on must be this directory's own: a record copied from elsewhere or edited is not believed.
    const expected: Partial<Record<keyof VirtualMachineOutputs, string>> = {
        vmDir,
        pidfile: f(VM_FILES.pidfile),
        qmpSocket: f(VM_FILES.qmpSocket),
        serialLog: f(VM_FILES.serialLog),
        launcherPath: f(VM_FILES.launcher),
    };
    const wrong = Object.entries(expected)
        .filter(([k, v]) => (outs as unknown as Record<string, unknown>)[k] !== v)
        .map(([k]) => k);
    if (
        wrong.length ||
        typeof outs.pid !== "number" ||
        typeof outs.processStartTime !== "string" ||
        typeof outs.bootId !== "string" ||
        typeof outs.argvHash !== "string"
    ) {
        throw refuse(
            `its record does not describe this directory (${wrong.length ? wrong.join(", ") : "process identity"}: it was moved, copied or edited)`,
            "Declare a new VirtualMachine instead.",
        );
    }
    let spec;
    try {
        spec = parseVmSpec(inputs.vm, "vm");
    } catch (err) {
        throw refuse(
            `the vm its record holds is no longer valid (${(err as Error).message})`,
            "Declare a new VirtualMachine instead.",
        );
    }
    if (!acceptedArgvHashes(spec, inputs.vm).includes(outs.argvHash)) {
        throw refuse(
            "the vm its record holds does not give the QEMU command line the VM was started with (a pulumi-qemu of another version made it)",
            "Declare a new VirtualMachine instead.",
        );
    }
    if (running.pid !== outs.pid || running.startTime !== outs.processStartTime || running.bootId !== outs.bootId) {
        throw refuse(
            "the QEMU running in it is not the one its record describes (another pid, start time or boot)",
            "Declare a new VirtualMachine instead.",
        );
    }
    return { id: vmId, outs, inputs };
}

/** The VM's id and state directory an import id names, or no id when it names neither form. */
function placeOf(id: string): { vmId?: string; stateDir: string } {
    if (!path.isAbsolute(id))
        return { vmId: VM_DIR_NAME.test(id) ? id : undefined, stateDir: resolveStateDir(undefined) };
    const dir = id.replace(/\/+$/, "");
    // No `..` or `.` to climb with, no doubled separators: the path must be the directory's own.
    if (path.normalize(dir) !== dir) return { stateDir: "/" };
    const vms = path.dirname(dir);
    const vmId = path.basename(dir);
    if (path.basename(vms) !== "vms" || !VM_DIR_NAME.test(vmId)) return { stateDir: "/" };
    return { vmId, stateDir: path.dirname(vms) };
}
