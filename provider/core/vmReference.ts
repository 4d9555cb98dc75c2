import { z } from "zod";
import { absolutePath } from "./validation";

/**
 * The VirtualMachine outputs a GuestCommand uses — its agent channel and who the running QEMU is —
 * as a GuestCommand's `vm` input takes them and its `vmTarget` output keeps them. Only these keys
 * are used; the rest of the VM's outputs may come along.
 */
/** What a GuestCommand's `vm` must be, said when it is neither. */
export const VM_WANTED =
    "vm must be the VirtualMachine's id (its directory under <stateDir>/vms, like vm-AbC123) or its outputs (pass the VirtualMachine resource's outputs, e.g. vm: myVm)";

export const vmReferenceSchema = z
    .looseObject(
        {
            id: z
                .string({ error: "vm.id must be the VirtualMachine's id" })
                .optional()
                .meta({ description: "The VirtualMachine's id." }),
            vmDir: absolutePath("vm.vmDir").optional().meta({ description: "The VM's private directory." }),
            agent: z
                .enum(["qga", "shell"], {
                    error: 'vm.agent must be "shell" or "qga": the VM needs vm.agent set for GuestCommand',
                })
                .meta({ typeName: "AgentKind", description: 'The VM\'s agent kind: "shell" or "qga".' }),
            agentSocket: absolutePath("vm.agentSocket").meta({
                description: "Host end of the agent channel (a unix socket path).",
            }),
            qmpSocket: absolutePath("vm.qmpSocket").meta({ description: "QMP control socket (a unix socket path)." }),
            serialLog: absolutePath("vm.serialLog").meta({ description: "Serial console log file." }),
            pid: z
                .number({ error: "vm.pid must be the VirtualMachine's pid output" })
                .int()
                .meta({ description: "QEMU's process id." }),
            processStartTime: z
                .string({ error: "vm.processStartTime must be the VirtualMachine's processStartTime output" })
                .min(1)
                .meta({
                    description:
                        "Start time of the QEMU process (clock ticks since boot, from /proc), to recognise a reused pid.",
                }),
            bootId: z
                .string({ error: "vm.bootId must be the VirtualMachine's bootId output" })
                .min(1)
                .meta({ description: "Host boot the process belongs to (/proc/sys/kernel/random/boot_id)." }),
            pidfile: absolutePath("vm.pidfile").meta({ description: "QEMU's pidfile." }),
        },
        { error: VM_WANTED },
    )
    .meta({
        typeName: "VmReference",
        description:
            "The VirtualMachine outputs a GuestCommand uses: its agent channel and the identity of the running QEMU (a stack output of the VM has them all).",
    });
