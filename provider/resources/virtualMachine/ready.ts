/**
 * Waiting for a started VM to be ready (its `ready` input): the serial pattern on the console,
 * an application-level answer on a forwarded port, and the checks made inside the guest over its
 * agent channel, polled together until all hold or the deadline passes; then QMP must answer.
 * Each poll is cheap (the new part of the log, one short probe), and every wait has a deadline.
 */
import { listeningTcpPorts } from "../../core/procNet";
import type { DaemonRuntime } from "../../core/qemuArgv";
import type { GuestChannel } from "../../host/guest/guestChannel";
import { QgaChannel } from "../../host/guest/qgaChannel";
import { ShellChannel } from "../../host/guest/shellChannel";
import { portProber } from "../../host/net/ports";
import { progress, progressIntervalMs } from "../../host/progress";
import { boundedDeadline } from "../../host/callDeadline";
import { checkOurDaemon, type ProcessIdentity } from "../../host/qemu/qemuProcess";
import { queryStatus, withQmp } from "../../host/qemu/qmp";
import { serialLogTail, SerialLogWatcher } from "../../host/qemu/serialWatch";
import { forwardFor, type Parsed, type Ready } from "./inputs";

const SERIAL_TAIL_LINES = 25;
/** Between readiness checks; each is a small file read or one short probe, and every tick shows in create time. */
const READY_POLL_MS = 100;

/**
 * One round of the readiness checks made inside the guest; undefined when all hold, else what
 * is still awaited. Each round is bounded by `withinMs`: a guest whose agent has not started
 * yet leaves the request waiting in the port.
 */
async function insideProbe(channel: GuestChannel, ready: Ready, withinMs: number): Promise<string | undefined> {
    const ask = (command: string) =>
        channel.execute(command, { timeoutSeconds: Math.max(1, Math.ceil(withinMs / 1000)), replyWithinMs: withinMs });
    let r;
    try {
        r = await ask(ready.command ?? "true");
    } catch (err) {
        return `the guest agent to answer (${(err as Error).message.split(". ")[0]})`;
    }
    if (ready.command !== undefined && r.exitCode !== 0)
        return `ready.command to exit 0 inside the guest (it exited ${r.exitCode}; stderr ${JSON.stringify(r.stderr.toString("utf8").slice(-300))})`;
    if (ready.guestPort !== undefined) {
        const ports = await ask("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true").then(
            (p) => listeningTcpPorts(p.stdout.toString("utf8")),
            () => new Set<number>(),
        );
        if (!ports.has(ready.guestPort)) return `something to listen on TCP port ${ready.guestPort} inside the guest`;
    }
    return undefined;
}

export async function serialTail(serialLog: string, lines = SERIAL_TAIL_LINES): Promise<string> {
    return serialLogTail(serialLog, lines);
}

/** Waits for every readiness condition asked for; returns QMP's run state once ready. */
export async function waitReady(
    p: Parsed,
    identity: ProcessIdentity,
    runtime: DaemonRuntime,
    picked: Record<number, number>,
    restored = false,
): Promise<string> {
    // The resource's customTimeouts bound the wait, and stand in for a timeoutSeconds left out.
    const bounded = boundedDeadline(Date.now() + p.ready.timeoutSeconds * 1000, p.readyTimeoutDefaulted === true);
    const deadline = bounded.at;
    const limit = bounded.by ?? `${p.ready.timeoutSeconds} s`;
    // Reads only what the log gained since the last poll, matched by a linear-time engine: a
    // chatty guest or a pattern that would backtrack forever cannot stall the provider.
    const watcher =
        p.ready.serialPattern !== undefined
            ? new SerialLogWatcher(runtime.serialLog, p.ready.serialPattern)
            : undefined;
    const target = p.ready.tcpPort !== undefined ? forwardFor(p.spec, p.ready.tcpPort, picked) : undefined;
    const prober = target ? portProber(target.address, target.port) : undefined;
    // A restored guest printed its console marker before the snapshot, in another log.
    let serialSeen = watcher === undefined || restored;
    let portAnswered = prober === undefined;
    const inside = p.ready.agent || p.ready.command !== undefined || p.ready.guestPort !== undefined;
    const channel: GuestChannel | undefined =
        !inside || !runtime.agentSocket
            ? undefined
            : p.spec.agent === "qga"
              ? new QgaChannel(runtime.agentSocket)
              : new ShellChannel(runtime.agentSocket);
    let insideWaiting: string | undefined = inside ? "the guest agent to answer" : undefined;
    let nextInside = 0;
    const t0 = Date.now();
    const waitingFor = () =>
        [
            !serialSeen ? `serialPattern ${JSON.stringify(p.ready.serialPattern)} on the console` : "",
            !portAnswered ? `an answer on host port ${target!.address}:${target!.port}` : "",
            insideWaiting ?? "",
            serialSeen && portAnswered && insideWaiting === undefined ? "QMP to answer" : "",
        ].filter(Boolean);
    // What the user sees while a guest boots: what is still awaited, and how long of how long.
    let nextReport = t0 + progressIntervalMs();
    try {
        for (;;) {
            const live = await checkOurDaemon(identity, runtime.pidfile);
            if (!live.alive)
                throw await notReady(`QEMU exited before the VM was ready (${live.reason})`, runtime.serialLog);
            if (!serialSeen) serialSeen = await watcher!.poll();
            if (!portAnswered) portAnswered = prober!.tick();
            if (insideWaiting !== undefined && serialSeen && portAnswered && Date.now() >= nextInside) {
                insideWaiting = await insideProbe(
                    channel!,
                    p.ready,
                    Math.max(1000, Math.min(10_000, deadline - Date.now())),
                );
                nextInside = Date.now() + 500;
            }
            if (serialSeen && portAnswered && insideWaiting === undefined) {
                const status = await qmpStatus(
                    runtime.qmpSocket,
                    Math.max(2000, Math.min(10000, deadline - Date.now())),
                );
                if (status !== undefined) return status;
            }
            if (Date.now() >= deadline) {
                const waiting = waitingFor();
                throw await notReady(
                    `the VM was not ready within ${limit} (waiting for ${waiting.join(" and ")})`,
                    runtime.serialLog,
                );
            }
            if (Date.now() >= nextReport) {
                progress(
                    `waiting for ${waitingFor().join(" and ")} (${Math.round((Date.now() - t0) / 1000)} s of ${Math.round((deadline - t0) / 1000)})`,
                );
                nextReport = Date.now() + progressIntervalMs();
            }
            await sleep(READY_POLL_MS);
        }
    } finally {
        prober?.stop();
        channel?.close();
    }
}

async function notReady(what: string, serialLog: string): Promise<Error> {
    return new Error(`${what}. Last lines of the serial console (${serialLog}):\n${await serialTail(serialLog)}`);
}

/** QMP's run state, or undefined when QMP does not answer in time (waiting its turn behind other clients). */
export async function qmpStatus(socketPath: string, timeoutMs: number): Promise<string | undefined> {
    try {
        return await withQmp(socketPath, timeoutMs, async (client) => (await queryStatus(client)).status);
    } catch {
        return undefined;
    }
}

function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
}
