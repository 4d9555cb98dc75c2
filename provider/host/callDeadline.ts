import { AsyncLocalStorage } from "node:async_hooks";

/**
 * The deadline of the lifecycle call in progress: a resource's `customTimeouts` (create, update,
 * delete). Pulumi gives a dynamic provider no timeout, so the SDK's classes hand their
 * customTimeouts to their shims, which run the call under `withCallDeadline`; the waits that can
 * be long — a VM's readiness, a tool copying data, a command in the guest, QEMU powering down — ask
 * `callDeadline()` and end by then, through the failure path they already have, which cleans up
 * what the call made. So a timeout is an ordinary failure and leaves nothing behind, rather than a
 * promise abandoned while its work goes on. AsyncLocalStorage carries it through every await (as
 * progress.ts does its sink), so resources worked on at once each keep their own.
 */

export interface CallDeadline {
    /** Epoch milliseconds. */
    at: number;
    /** What set it, for messages: "customTimeouts.create (30 s)". */
    what: string;
}

const current = new AsyncLocalStorage<CallDeadline>();

/** Runs `work` under a deadline `seconds` from now; without `seconds`, as it is. */
export function withCallDeadline<T>(seconds: number | undefined, op: string, work: () => Promise<T>): Promise<T> {
    if (seconds === undefined || !Number.isFinite(seconds) || seconds <= 0) return work();
    return current.run({ at: Date.now() + seconds * 1000, what: `customTimeouts.${op} (${seconds} s)` }, work);
}

export function callDeadline(): CallDeadline | undefined {
    return current.getStore();
}

/**
 * A wait's own deadline (epoch ms) under the call's: the earlier of the two. A wait whose length
 * the user did not choose (a default) follows the call's deadline, longer or shorter.
 */
export function boundedDeadline(ownAt: number, ownIsDefault: boolean): { at: number; by?: string } {
    const call = current.getStore();
    if (!call) return { at: ownAt };
    if (ownIsDefault || call.at < ownAt) return { at: call.at, by: call.what };
    return { at: ownAt };
}

/** Milliseconds left of the call's deadline, if there is one (never negative). */
export function callRemainingMs(): number | undefined {
    const call = current.getStore();
    return call ? Math.max(0, call.at - Date.now()) : undefined;
}

/**
 * Go-style durations as Pulumi's customTimeouts take them ("30s", "5m", "1h30m", "1.5h", "500ms"),
 * in seconds; undefined for an empty or missing value. Refuses what Pulumi would not parse.
 */
export function parseTimeout(value: unknown, field: string): number | undefined {
    if (value === undefined || value === null || value === "") return undefined;
    if (typeof value !== "string")
        throw new Error(`${field} must be a duration such as "30s", "5m" or "1h30m" (got ${JSON.stringify(value)})`);
    const unit: Record<string, number> = { ns: 1e-9, us: 1e-6, µs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };
    const re = /([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)/gy;
    let total = 0;
    let matched = 0;
    for (let m = re.exec(value); m; m = re.exec(value)) {
        total += Number(m[1]) * unit[m[2]];
        matched = re.lastIndex;
    }
    if (matched !== value.length || matched === 0)
        throw new Error(`${field} must be a duration such as "30s", "5m" or "1h30m" (got ${JSON.stringify(value)})`);
    return total;
}
