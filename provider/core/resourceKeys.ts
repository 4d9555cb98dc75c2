/**
 * The top-level input names of RunScript and VirtualMachine, and the output names the SDK
 * declares (as undefined) for each, for `refuseUnknownKeys` in their checks. DiskImage's live in
 * diskImageSpec.ts. The output lists must match sdk/resources.ts; a unit test checks.
 */

export const RUN_SCRIPT_INPUT_KEYS: readonly string[] = ["vm", "path", "stateDir", "mode"];
export const RUN_SCRIPT_OUTPUT_KEYS: readonly string[] = ["argv", "argvHash", "accel", "contentHash", "mode", "drift"];

export const NETWORK_INPUT_KEYS: readonly string[] = ["name", "subnet", "stateDir", "dhcp"];
export const NETWORK_OUTPUT_KEYS: readonly string[] = ["subnet", "netmask", "networkDir", "switchDir", "pidfile", "pid", "processStartTime", "bootId", "switchIdentity", "dhcp", "domain", "dhcpServer", "dhcpIdentity", "dhcpDrift"];

export const VIRTUAL_MACHINE_INPUT_KEYS: readonly string[] = ["vm", "ready", "stateDir", "warmStart"];
export const VIRTUAL_MACHINE_OUTPUT_KEYS: readonly string[] = [
    "pid",
    "qmpSocket",
    "serialLog",
    "launcherPath",
    "argvHash",
    "status",
    "accel",
    "accelReason",
    "startedAt",
    "readySeconds",
    "vmDir",
    "nics",
    "hosts",
    "networkDrift",
    "ports",
    "endpoints",
    "portsNote",
    "agent",
    "agentSocket",
    "pidfile",
    "processStartTime",
    "bootId",
    "start",
    "startNote",
];
