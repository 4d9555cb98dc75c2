import { AsyncLocalStorage } from "node:async_hooks";

/**
 * What a long operation tells the user while it works, without knowing who listens. The
 * lifecycles and host adapters call `progress()`/`warn()`/`whileWorking()`; by default nothing
 * happens. The provider plugin installs a sink per engine call (`withProgress`) that sends the
 * engine a log message for the resource being worked on; the dynamic-provider path installs one
 * without a resource (see provider/plugin/engineLog.ts). AsyncLocalStorage carries the sink
 * through every await, so two resources created at once each report to their own.
 */

export interface ProgressSink {
    /** A status line: where a long wait or job has got to. May be shown and then replaced. */
    status(message: string): void;
    /** Something the user should act on (KVM unusable, b3sum missing); kept with the resource. */
    warning(message: string): void;
}

const current = new AsyncLocalStorage<ProgressSink>();

/** Runs `work` with `sink` receiving everything it reports. */
export function withProgress<T>(sink: ProgressSink, work: () => Promise<T>): Promise<T> {
    return current.run(sink, work);
}

/** The sink of the call in progress, to hand on to work that reports later from elsewhere (a far host's replies). */
export function currentSink(): ProgressSink | undefined {
    return current.getStore();
}

export function progress(message: string): void {
    current.getStore()?.status(message);
}

export function warn(message: string): void {
    current.getStore()?.warning(message);
}

/** Whether anyone listens: a caller may skip work done only to describe progress. */
export function reporting(): boolean {
    return current.getStore() !== undefined;
}

/** How often a long operation reports: every 5 s (PULUMI_QEMU_PROGRESS_SECONDS overrides, e.g. 1 in tests). */
export function progressIntervalMs(): number {
    const s = Number(process.env.PULUMI_QEMU_PROGRESS_SECONDS);
    return Number.isFinite(s) && s > 0 ? s * 1000 : 5000;
}

/**
 * Runs `work`, reporting `describe(elapsedSeconds)` every interval while it runs; nothing for
 * work that ends within the first interval, so quick operations stay quiet.
 */
export async function whileWorking<T>(
    describe: (elapsedSeconds: number) => string,
    work: () => Promise<T>,
): Promise<T> {
    const sink = current.getStore();
    if (!sink) return work();
    const t0 = Date.now();
    const timer = setInterval(() => {
        try {
            sink.status(describe(Math.round((Date.now() - t0) / 1000)));
        } catch {
            // A description that fails to build must not fail the work it describes.
        }
    }, progressIntervalMs());
    timer.unref();
    try {
        return await work();
    } finally {
        clearInterval(timer);
    }
}

/** "20 GiB", "512 MiB", "3.5 KiB": sizes in progress lines. */
export function humanBytes(bytes: number): string {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let v = bytes;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
        v /= 1024;
        i++;
    }
    return i === 0 ? `${bytes} bytes` : `${v >= 10 ? Math.round(v) : Math.round(v * 10) / 10} ${units[i]}`;
}
