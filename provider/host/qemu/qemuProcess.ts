import { readFile, rm } from "node:fs/promises";
import execa from "execa";
import { QmpClient } from "./qmp";
import { callRemainingMs } from "../callDeadline";

/**
 * The daemonized QEMU process: starting it, knowing it again later, and stopping it.
 *
 * A pid alone names nothing for long: after QEMU exits, the kernel may hand its pid to any
 * other process. So a running QEMU is remembered by its identity — pid, the start time the
 * kernel records in /proc/PID/stat, and the boot it started in — and every signal is sent only
 * after checking that identity, and that the process's command line carries our pidfile.
 */

export interface ProcessIdentity {
    pid: number;
    /** Field 22 of /proc/PID/stat: clock ticks after boot; a reused pid gets a later one. */
    startTime: string;
    /** /proc/sys/kernel/random/boot_id: start times restart from zero on each boot. */
    bootId: string;
}

export interface ProcStat {
    state: string;
    startTime: string;
}

export async function readBootId(): Promise<string> {
    return (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim();
}

/** Parses /proc/PID/stat; the command name may hold spaces and parentheses, so fields are counted after the last ")". */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
    let text: string;
    try {
        text = await readFile(`/proc/${pid}/stat`, "utf8");
    } catch {
        return undefined;
    }
    return parseProcStat(text);
}

export function parseProcStat(text: string): ProcStat {
    const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
    return { state: rest[0], startTime: rest[19] };
}

export async function readCmdline(pid: number): Promise<string[] | undefined> {
    try {
        return (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0").filter((s) => s.length > 0);
    } catch {
        return undefined;
    }
}

/** The identity of a live process, or undefined when there is none (or only a zombie). */
export async function identify(pid: number): Promise<ProcessIdentity | undefined> {
    const st = await readProcStat(pid);
    if (!st || isDead(st.state)) return undefined;
    return { pid, startTime: st.startTime, bootId: await readBootId() };
}

/** A zombie has exited and only waits to be reaped (slowly, by PID 1, here): it counts as gone. */
function isDead(state: string): boolean {
    return state === "Z" || state === "X" || state === "x";
}

export type Liveness = { alive: true } | { alive: false; reason: string };

/**
 * Whether `identity` still names our daemon — a QEMU, or a vde_switch we started the same way:
 * the same boot, the same pid with the same start time, not a zombie, and a command line that
 * names `pidfile` (what our daemons are started with).
 */
export async function checkOurDaemon(identity: ProcessIdentity, pidfile: string): Promise<Liveness> {
    return judgeOurDaemon(identity, pidfile, {
        bootId: readBootId,
        stat: () => readProcStat(identity.pid),
        cmdline: () => readCmdline(identity.pid),
    });
}

/** What checkOurDaemon reads, from wherever it is read (this machine's /proc, or a far host's over SSH). */
export interface ProcFacts {
    bootId(): Promise<string>;
    stat(): Promise<ProcStat | undefined>;
    cmdline(): Promise<string[] | undefined>;
}

export async function judgeOurDaemon(identity: ProcessIdentity, pidfile: string, facts: ProcFacts): Promise<Liveness> {
    if ((await facts.bootId()) !== identity.bootId)
        return { alive: false, reason: "the host has rebooted since QEMU started" };
    const st = await facts.stat();
    if (!st) return { alive: false, reason: `no process ${identity.pid}` };
    if (isDead(st.state)) return { alive: false, reason: `process ${identity.pid} has exited (state ${st.state})` };
    if (st.startTime !== identity.startTime) {
        return {
            alive: false,
            reason: `pid ${identity.pid} now belongs to another process (start time ${st.startTime}, ours was ${identity.startTime})`,
        };
    }
    const cmdline = await facts.cmdline();
    if (!cmdline || !cmdline.includes(pidfile)) {
        return { alive: false, reason: `process ${identity.pid} is not the QEMU that writes ${pidfile}` };
    }
    return { alive: true };
}

export async function readPidfile(pidfile: string): Promise<number | undefined> {
    let text: string;
    try {
        text = await readFile(pidfile, "utf8");
    } catch {
        return undefined;
    }
    const pid = Number(text.trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** QEMU (or the launcher that execs it) failed before it detached; `stderr` is QEMU's own message. */
export class QemuStartError extends Error {
    constructor(
        message: string,
        readonly stderr: string,
    ) {
        super(message);
        this.name = "QemuStartError";
    }
}

export interface StartOptions {
    /** Bound on the foreground part: QEMU's parent waits for the child to finish initialising. */
    timeoutMs?: number;
}

/**
 * Runs `command` (a launcher, or QEMU itself, with -daemonize and -pidfile `pidfile`), which
 * returns once QEMU has detached, and returns the identity of the detached QEMU.
 */
export async function startDaemonized(
    command: readonly string[],
    pidfile: string,
    opts: StartOptions = {},
): Promise<ProcessIdentity> {
    const timeoutMs = opts.timeoutMs ?? 60000;
    const run = await execa(command[0], command.slice(1), {
        reject: false,
        stdin: "ignore",
        timeout: timeoutMs,
        killSignal: "SIGKILL",
        all: false,
    });
    if (run.timedOut || run.exitCode !== 0) {
        // A half-started child may already have written its pidfile: do not leave it running.
        await killByPidfile(pidfile);
        const stderr = (run.stderr || run.stdout || "").trim();
        const why = run.timedOut
            ? `did not detach within ${timeoutMs} ms`
            : `exited with status ${run.exitCode ?? run.signal}`;
        throw new QemuStartError(`${command[0]} ${why}${stderr ? `: ${stderr}` : ""}`, stderr);
    }
    const pid = await waitForPidfile(pidfile, 2000);
    if (pid === undefined)
        throw new QemuStartError(`${command[0]} detached but wrote no pid to ${pidfile}`, run.stderr);
    const identity = await identify(pid);
    const ours = identity && (await checkOurDaemon(identity, pidfile));
    if (!identity || !ours || !ours.alive) {
        throw new QemuStartError(
            `QEMU (pid ${pid}) exited right after starting${ours && !ours.alive ? ` (${ours.reason})` : ""}; see its serial log`,
            run.stderr,
        );
    }
    return identity;
}

async function waitForPidfile(pidfile: string, timeoutMs: number): Promise<number | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const pid = await readPidfile(pidfile);
        if (pid !== undefined || Date.now() > deadline) return pid;
        await sleep(20);
    }
}

async function killByPidfile(pidfile: string): Promise<void> {
    const pid = await readPidfile(pidfile);
    if (pid === undefined) return;
    const identity = await identify(pid);
    if (!identity || !(await checkOurDaemon(identity, pidfile)).alive) return;
    await signalIfOurs(identity, pidfile, "SIGKILL");
    await waitUntilGone(identity, pidfile, 5000);
}

/** Sends `signal` only after re-checking that the pid is still our QEMU. */
async function signalIfOurs(identity: ProcessIdentity, pidfile: string, signal: NodeJS.Signals): Promise<boolean> {
    if (!(await checkOurDaemon(identity, pidfile)).alive) return false;
    try {
        process.kill(identity.pid, signal);
        return true;
    } catch {
        return false;
    }
}

/** Polls until the process is gone (a zombie counts) or `timeoutMs` passes; true when gone. */
export async function waitUntilGone(identity: ProcessIdentity, pidfile: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        if (!(await checkOurDaemon(identity, pidfile)).alive) return true;
        if (Date.now() >= deadline) return false;
        await sleep(50);
    }
}

export interface StopTarget {
    identity: ProcessIdentity;
    pidfile: string;
    qmpSocket: string;
}

export interface StopOptions {
    /** How long the guest gets to power off after the ACPI power button. 0 skips it. */
    powerdownMs?: number;
    /** How long QEMU gets to exit after QMP `quit`. */
    quitMs?: number;
    /** How long to wait for the kernel to take the process after SIGKILL. */
    killMs?: number;
}

export type StopOutcome = "not-running" | "powerdown" | "quit" | "term" | "kill";

/**
 * Stops our QEMU, gentlest first: ACPI power button (the guest shuts down cleanly if it
 * listens), then QMP `quit` (or SIGTERM when QMP cannot be reached), then SIGKILL. Never
 * signals a process that is not our QEMU.
 */
export async function stopQemu(target: StopTarget, opts: StopOptions = {}): Promise<StopOutcome> {
    const { identity, pidfile, qmpSocket } = target;
    const quitMs = opts.quitMs ?? 5000;
    const killMs = opts.killMs ?? 5000;
    // Under the resource's customTimeouts.delete the clean power-off gets what is left once
    // quit and kill have their time (longer or shorter than the default 10 s), so the stop ends by then.
    const left = callRemainingMs();
    const shutdownWindow = left === undefined ? undefined : Math.max(0, left - quitMs - killMs);
    const powerdownMs =
        shutdownWindow === undefined
            ? (opts.powerdownMs ?? 10000)
            : Math.min(opts.powerdownMs ?? shutdownWindow, shutdownWindow);
    if (!(await checkOurDaemon(identity, pidfile)).alive) return "not-running";
    // A QEMU stopped by a signal (the test API's freeze or CPU starvation) answers nothing and
    // would take the slow road to SIGKILL: let it run to be stopped properly.
    if ((await readProcStat(identity.pid))?.state === "T") await signalIfOurs(identity, pidfile, "SIGCONT");

    const qmp = await QmpClient.connect(qmpSocket, { connectTimeoutMs: 3000, commandTimeoutMs: 3000 }).catch(
        () => undefined,
    );
    try {
        if (qmp && powerdownMs > 0) {
            const sent = await qmp.execute("system_powerdown").then(
                () => true,
                () => false,
            );
            if (sent && (await waitUntilGone(identity, pidfile, powerdownMs))) return "powerdown";
        }
        if (qmp && !qmp.isClosed) {
            // QEMU may close the socket before or after answering quit; either is fine.
            await qmp.execute("quit").catch(() => undefined);
            if (await waitUntilGone(identity, pidfile, quitMs)) return "quit";
        }
    } finally {
        qmp?.close();
    }
    // QMP unreachable (QEMU serves one client at a time; another may hold it): QEMU treats
    // SIGTERM as a clean quit, so try that before the kill that gives it no chance to flush.
    if (!qmp && (await signalIfOurs(identity, pidfile, "SIGTERM")) && (await waitUntilGone(identity, pidfile, quitMs)))
        return "term";
    await signalIfOurs(identity, pidfile, "SIGKILL");
    if (await waitUntilGone(identity, pidfile, killMs)) return "kill";
    throw new Error(`QEMU pid ${identity.pid} is still running after SIGKILL`);
}

/** Removes files QEMU leaves behind (the socket stays after exit); absent ones are fine. */
export async function removeRuntimeFiles(files: readonly string[]): Promise<void> {
    await Promise.all(files.map((f) => rm(f, { force: true })));
}

function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
}
