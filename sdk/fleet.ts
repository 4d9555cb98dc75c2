import { siteOf, type VmSite } from "../provider/resources/virtualMachine/site";
import type { SnapshotInfo } from "../provider/host/qemu/snapshots";
import { attachCommand } from "./debugCommand";
import { attach, MachineError, type Machine, type MachineOutputs } from "./machine";

/**
 * Fleet snapshots for tests: a set of running VMs saved and put back together, so that a test
 * suite can reset a whole distributed system between cases in a fraction of its boot.
 *
 * Consistency comes from pausing: every VM is paused (QMP `stop`) before any is saved, and
 * none is resumed before all are saved, so no VM runs ahead of another and every packet in
 * flight between them is either in a sender's or a receiver's saved state (vde_switch holds no
 * frames worth keeping: a frame it dropped is one a real switch could drop). A VM saved while
 * paused is loaded paused, so a restore loads every VM, in parallel, and then resumes them all
 * at once. The snapshot of each VM is an ordinary per-VM snapshot (host/snapshots.ts) of the
 * same name, so a fleet snapshot is also visible, and deletable, one VM at a time.
 *
 * After a restore each guest's clock is where it was at the snapshot (its virtual clock stood
 * still while paused). With an agent the clock is set to the host's again; a VM without one
 * keeps the old time, and the restore report says how far behind it is.
 */

export interface FleetSnapshotOptions {
    /** Deadline of each VM's save or load; default 120 s. */
    timeoutSeconds?: number;
}

export interface FleetRestoreOptions extends FleetSnapshotOptions {
    /** Set each guest's clock to the host's after the restore (default true; VMs without an agent are left as they are). */
    syncClock?: boolean;
}

export interface FleetSnapshotReport {
    name: string;
    /** From the first VM paused to the last resumed: how long the fleet stood still. */
    pausedMs: number;
    /** Each VM's saved memory and device state, by member name. */
    vms: Record<string, SnapshotInfo>;
}

export interface FleetRestoreReport {
    name: string;
    /** From the first VM paused to every clock set (or the last VM resumed, without clock sync). */
    ms: number;
    /**
     * Each member's clock after the restore: "set" (to the host's, over its agent), or for a VM
     * with no agent, how far behind the host it is left ("behind by 12 s": the time since the snapshot).
     */
    clocks: Record<string, string>;
}

export interface Fleet {
    /** Member names, in the order given. */
    readonly names: readonly string[];
    /** The test API's Machine of one member (attach()ed once, shared). */
    machine(name: string): Machine;
    /** Pauses all, saves all as `name`, resumes all. On failure nothing is kept and every VM runs again. */
    snapshot(name: string, opts?: FleetSnapshotOptions): Promise<FleetSnapshotReport>;
    /** Pauses all, loads `name` into each in parallel, resumes all, sets the clocks. */
    restore(name: string, opts?: FleetRestoreOptions): Promise<FleetRestoreReport>;
    /** Deletes `name` from every member that has it. */
    deleteSnapshot(name: string, opts?: FleetSnapshotOptions): Promise<void>;
    /** Names of the snapshots every member has (and none has damaged). */
    snapshots(): Promise<string[]>;
    /** Lets go of every agent connection; the VMs keep running. */
    close(): void;
    /**
     * For each member, the commands that attach to it by hand (`npx pulumi-qemu shell|qmp|console …`).
     */
    attachCommands(): Record<string, { shell: string; qmp: string; console: string }>;
    /**
     * Runs `body`; when it throws and the environment has PULUMI_QEMU_KEEP_FAILED=1, marks the
     * fleet `kept` (the test's teardown should then leave the VMs running) and prints the
     * commands to attach to each member, through `log` (default console.error). The error is
     * thrown on either way.
     */
    debugOnFailure<T>(body: () => Promise<T>, log?: (line: string) => void): Promise<T>;
    /** True once debugOnFailure kept the fleet for debugging: skip deleting its VMs. */
    readonly kept: boolean;
}

interface Member {
    name: string;
    outputs: MachineOutputs;
    site: VmSite;
    machine: Machine;
}

/**
 * A fleet of running VMs, by name: `fleet({ db: outs.db, web: outs.web })` with each value a
 * VirtualMachine's outputs (a stack output of the resource has them all).
 */
export function fleet(members: Record<string, MachineOutputs>): Fleet {
    const list: Member[] = Object.entries(members).map(([name, outputs]) => {
        if (!outputs || typeof outputs !== "object")
            throw new Error(`fleet: member ${name} is ${JSON.stringify(outputs)}; pass a VirtualMachine's outputs`);
        return {
            name,
            outputs,
            site: siteOf(outputs as MachineOutputs & { serialLog: string }),
            machine: attach(outputs),
        };
    });
    if (!list.length) throw new Error("fleet: no members; pass { name: VirtualMachine outputs, ... }");
    const byName = new Map(list.map((m) => [m.name, m]));
    let kept = false;

    /** Runs `fn` on every member at once; fails naming each member that failed, after all have settled. */
    const all = async <T>(what: string, fn: (m: Member) => Promise<T>): Promise<T[]> => {
        const settled = await Promise.allSettled(list.map(fn));
        const failed = settled.flatMap((s, i) =>
            s.status === "rejected" ? [`${list[i].name}: ${(s.reason as Error).message}`] : [],
        );
        if (failed.length)
            throw new MachineError(
                `fleet ${what} failed on ${failed.length} of ${list.length} VMs: ${failed.join("; ")}`,
            );
        return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
    };
    const pauseAll = () => all("pause (QMP stop)", (m) => m.site.qmp("stop"));
    /** Resumes every member, also after an error: a fleet is never left paused by us. */
    const resumeAll = () => all("resume (QMP cont)", (m) => m.site.qmp("cont"));

    return {
        names: list.map((m) => m.name),
        machine(name) {
            const m = byName.get(name);
            if (!m)
                throw new Error(`fleet: no member ${JSON.stringify(name)} (members: ${[...byName.keys()].join(", ")})`);
            return m.machine;
        },

        async snapshot(name, opts = {}) {
            const t0 = Date.now();
            let vms: Record<string, SnapshotInfo>;
            try {
                await pauseAll();
                const infos = await Promise.allSettled(list.map((m) => m.site.snapshots.save(m.outputs, name, opts)));
                const failed = infos.flatMap((s, i) =>
                    s.status === "rejected" ? [`${list[i].name}: ${(s.reason as Error).message}`] : [],
                );
                if (failed.length) {
                    // A fleet snapshot is all or nothing: take back the members that were saved.
                    await Promise.all(
                        list.map((m, i) =>
                            infos[i].status === "fulfilled"
                                ? m.site.snapshots.remove(m.outputs, name).catch(() => undefined)
                                : undefined,
                        ),
                    );
                    throw new MachineError(
                        `fleet snapshot ${name} failed on ${failed.length} of ${list.length} VMs, and was taken back on the others: ${failed.join("; ")}`,
                    );
                }
                vms = Object.fromEntries(
                    list.map((m, i) => [m.name, (infos[i] as PromiseFulfilledResult<SnapshotInfo>).value]),
                );
            } finally {
                await resumeAll();
            }
            return { name, pausedMs: Date.now() - t0, vms };
        },

        async restore(name, opts = {}) {
            // Everything is checked before any VM is touched: a missing or damaged member leaves the fleet running as it is.
            const problems = (
                await all("snapshot list", async (m) => {
                    const s = (await m.site.snapshots.list(m.outputs)).find((x) => x.name === name);
                    return !s
                        ? `${m.name} has no snapshot ${name}`
                        : s.damaged
                          ? `${m.name}'s snapshot ${name} is damaged: ${s.damaged}`
                          : undefined;
                })
            ).filter((p): p is string => p !== undefined);
            if (problems.length)
                throw new MachineError(`fleet restore ${name}: nothing was restored: ${problems.join("; ")}`);
            const createdAt = new Map<string, number>();
            for (const m of list) {
                const s = (await m.site.snapshots.list(m.outputs)).find((x) => x.name === name)!;
                createdAt.set(m.name, Date.parse(s.createdAt));
            }
            const t0 = Date.now();
            // Each guest's end of its channel goes back in time: fresh sessions afterwards.
            for (const m of list) m.machine.close();
            try {
                await pauseAll();
                await all(`restore ${name}`, (m) => m.site.snapshots.restore(m.outputs, name, opts));
            } finally {
                await resumeAll();
            }
            const clocks: Record<string, string> = {};
            const sync = opts.syncClock ?? true;
            await all("clock sync", async (m) => {
                if (!m.outputs.agent) {
                    const behind = Math.round((Date.now() - (createdAt.get(m.name) ?? Date.now())) / 1000);
                    clocks[m.name] = `behind by ${behind} s (no agent to set it)`;
                    return;
                }
                if (!sync) {
                    clocks[m.name] = "left as restored";
                    return;
                }
                await setGuestClock(m.machine, opts.timeoutSeconds ?? 30);
                clocks[m.name] = "set";
            });
            return { name, ms: Date.now() - t0, clocks };
        },

        async deleteSnapshot(name, opts = {}) {
            await all(`delete snapshot ${name}`, async (m) => {
                const has = (await m.site.snapshots.list(m.outputs)).some((s) => s.name === name);
                if (has) await m.site.snapshots.remove(m.outputs, name, opts);
            });
        },

        async snapshots() {
            const lists = await all("snapshot list", (m) => m.site.snapshots.list(m.outputs));
            const names = lists.map((l) => new Set(l.filter((s) => !s.damaged).map((s) => s.name)));
            return [...names[0]].filter((n) => names.every((s) => s.has(n))).sort();
        },

        close() {
            for (const m of list) m.machine.close();
        },

        attachCommands() {
            return Object.fromEntries(
                list.map((m) => {
                    const o = m.outputs as MachineOutputs & { vmDir: string; stateDir?: string };
                    if (typeof o.vmDir !== "string")
                        throw new Error(`fleet: member ${m.name} has no vmDir output; pass a VirtualMachine's outputs`);
                    return [
                        m.name,
                        {
                            shell: attachCommand("shell", o),
                            qmp: attachCommand("qmp", o),
                            console: attachCommand("console", o),
                        },
                    ];
                }),
            );
        },

        async debugOnFailure(body, log = (line) => console.error(line)) {
            try {
                return await body();
            } catch (err) {
                if (process.env.PULUMI_QEMU_KEEP_FAILED === "1") {
                    kept = true;
                    const lines = [
                        `The fleet is kept running (PULUMI_QEMU_KEEP_FAILED=1) for you to look at; attach with:`,
                    ];
                    for (const [name, c] of Object.entries(this.attachCommands()))
                        lines.push(`  ${name}:`, `    ${c.shell}`, `    ${c.qmp}`, `    ${c.console}`);
                    lines.push("Delete the VMs (pulumi destroy, or the test's own cleanup) when done.");
                    for (const l of lines) log(l);
                }
                throw err;
            }
        },

        get kept() {
            return kept;
        },
    };
}

/**
 * Sets the guest's clock to the host's over its agent. `date -u -s @SECONDS` works on busybox
 * and coreutils alike and through both agents; it is whole seconds, so the guest may be up to
 * a second behind.
 */
export async function setGuestClock(machine: Machine, timeoutSeconds = 30): Promise<void> {
    await machine.succeed(`date -u -s @${Math.floor(Date.now() / 1000)} >/dev/null`, { timeoutSeconds });
}
