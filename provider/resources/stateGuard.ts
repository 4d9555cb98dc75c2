/**
 * The state a lifecycle call gets back from the engine is not always what create returned: a
 * damaged state file, a hand edit, or `pulumi import` (which calls Read with an id alone). A
 * call that finds the fields it relies on missing says so plainly, instead of failing on an
 * undefined deep inside.
 */

type Kind = "string" | "number" | "object";

export class StateError extends Error {
    constructor(message: string) {
        super(message);
        this.name = "StateError";
    }
}

/** Throws a StateError naming every field of `required` that `props` lacks or holds with the wrong type. */
export function requireState(
    resource: string,
    operation: string,
    props: unknown,
    required: Record<string, Kind>,
): void {
    const record =
        props !== null && typeof props === "object" && !Array.isArray(props) ? (props as Record<string, unknown>) : {};
    const bad = Object.entries(required)
        .filter(([key, kind]) => {
            const v = record[key];
            return kind === "object" ? v === null || typeof v !== "object" : typeof v !== kind;
        })
        .map(([key]) => key);
    if (bad.length === 0) return;
    const empty = Object.keys(record).length === 0;
    if (empty && operation === "read") {
        // Read with an id and no state is `pulumi import` or the import resource option.
        throw new StateError(
            `import of a ${resource}: pulumi-qemu cannot adopt an existing ${resource} (only a DiskImage or RunScript it made, by its path, and a running VirtualMachine it started, by its id). ` +
                `Nothing was touched. Declare the ${resource} without \`import\` and let \`pulumi up\` create it.`,
        );
    }
    throw new StateError(
        `${operation} of this ${resource}: its state ${empty ? "is empty" : `lacks ${bad.join(", ")}`}, so pulumi-qemu cannot tell which files or processes are its own. ` +
            `The state was damaged or edited, or the resource is being imported, which pulumi-qemu cannot do yet. ` +
            `Nothing was touched. Remove the resource from the stack's state (\`pulumi state delete URN\`) and let the next \`pulumi up\` create it again.`,
    );
}

/** State with nothing in it (the dynamic plugin's `__provider` aside): what Read gets from an import. */
export function isEmptyState(props: unknown): boolean {
    if (props === null || props === undefined) return true;
    if (typeof props !== "object" || Array.isArray(props)) return false;
    return Object.keys(props).every((k) => k === "__provider");
}

export const DISK_IMAGE_STATE: Record<string, Kind> = {
    path: "string",
    inputHash: "string",
    format: "string",
    imageStamp: "object",
};
export const RUN_SCRIPT_STATE: Record<string, Kind> = { path: "string", argvHash: "string", contentHash: "string" };
export const VM_STATE: Record<string, Kind> = {
    vmDir: "string",
    pid: "number",
    pidfile: "string",
    qmpSocket: "string",
    serialLog: "string",
    launcherPath: "string",
    argvHash: "string",
    processStartTime: "string",
    bootId: "string",
};
