import { isSecret, stripSecrets, type Props } from "./secrets";

/**
 * Secrets never go on a command line: every local user can read any process's argv (`ps`,
 * /proc/PID/cmdline), whatever the mode of the launcher that started it. A VM's name reaches
 * QEMU through an owner-only config file (see core/qemuArgv.ts), but the kernel's command line
 * has no file form (`-append` is the only way in), so a secret there is refused — and only this
 * plugin can tell, because only it receives inputs marked secret. The dynamic provider and the
 * testing API get plain values; docs/security.md says what `ps` shows there.
 */

export interface CommandLineProblem {
    property: string;
    reason: string;
}

const SEED_HINT =
    'pass secrets to the guest in a cloud-init seed instead (a DiskImage with source kind "cloudInit" attached as a disk: its file is owner-only), or over the guest agent (GuestCommand with a secret stdin or environment)';

/** What a VirtualMachine's or RunScript's secret inputs would put on QEMU's command line. */
export function commandLineSecretProblems(token: string, inputs: unknown): CommandLineProblem[] {
    if (token !== "qemu:index:VirtualMachine" && token !== "qemu:index:RunScript") return [];
    if (inputs === null || typeof inputs !== "object") return [];
    const vmWire = (inputs as Props).vm;
    const wholeVmSecret = isSecret(vmWire);
    const vm = (wholeVmSecret ? (vmWire as { value: unknown }).value : vmWire) as Props | undefined;
    if (vm === null || typeof vm !== "object" || Array.isArray(vm)) return [];
    const problems: CommandLineProblem[] = [];

    const args = vm.kernelArguments;
    if (wholeVmSecret || isSecret(args)) {
        const plain = stripSecrets(args);
        if (Array.isArray(plain) && plain.length > 0)
            problems.push({ property: "vm.kernelArguments", reason: kernelReason("vm.kernelArguments") });
    } else if (Array.isArray(args)) {
        args.forEach((a, i) => {
            if (isSecret(a))
                problems.push({
                    property: `vm.kernelArguments[${i}]`,
                    reason: kernelReason(`vm.kernelArguments[${i}]`),
                });
        });
    }

    const name = stripSecrets(vm.name);
    if ((wholeVmSecret || isSecret(vm.name)) && typeof name === "string" && name !== "") {
        const why = nameOnCommandLine(token, name, stripSecrets(vm) as Props);
        if (why) problems.push({ property: "vm.name", reason: why });
    }
    return problems;
}

function kernelReason(field: string): string {
    return `${field} is secret, but kernel arguments reach the guest only on QEMU's command line (-append), which every local user can read with ps (/proc/PID/cmdline); ${SEED_HINT}`;
}

/** Why a secret name would still end up on a command line, or undefined when it goes through a file. */
function nameOnCommandLine(token: string, name: string, vm: Props): string | undefined {
    // A RunScript's launcher keeps -name (its text, and so its identity, is what it always was):
    // docs/security.md says a name is visible in ps while you run one.
    if (token === "qemu:index:RunScript") return undefined;
    if (name.includes('"')) {
        return "vm.name is secret and holds a double quote, which QEMU's config file cannot carry, so it would go on QEMU's command line (readable with ps); use a name without \" (or not secret)";
    }
    const nics = Array.isArray(vm.networks) ? (vm.networks as Props[]) : [];
    if (typeof vm.kernel === "string" && nics.some((n) => n && typeof n === "object" && n.hostname === undefined)) {
        return "vm.name is secret, but with kernel set it becomes the guest's hostname on a private network, passed in the kernel's command line (ip=…), which every local user can read with ps; set networks[].hostname, or use a name that is not secret";
    }
    return undefined;
}
