import { createConnection } from "node:net";
import * as path from "node:path";
import { DEFAULT_VLAN, parsePortPrint, parseVlanPrint, type SwitchPort } from "../../core/switchPorts";

/**
 * vde_switch's management console, spoken directly over its unix socket (`--mgmt`, owner-only):
 * a banner, the prompt `vde$ `, then for each command line optional data between
 * `0000 DATA END WITH '.'` and a lone `.`, and a status line `1000 Success` or `1NNN <errno text>`.
 * Partitions are made here by moving ports between untagged VLANs, which the switch keeps
 * apart; each command takes effect before its status line comes back.
 */

export function mgmtPath(networkDir: string): string {
    return path.join(networkDir, "mgmt");
}

export class SwitchCommandError extends Error {
    constructor(
        readonly command: string,
        readonly code: number,
        readonly text: string,
    ) {
        super(`vde_switch refused "${command}": ${code} ${text}`);
        this.name = "SwitchCommandError";
    }
}

export interface SwitchConsole {
    /** Runs one command; returns its data lines, throws SwitchCommandError on a status other than 1000. */
    run(command: string): Promise<string[]>;
}

/** Opens the console of the switch whose management socket is `mgmt`, runs `body`, closes it; every wait bounded. */
export async function withSwitchConsole<T>(
    mgmt: string,
    body: (c: SwitchConsole) => Promise<T>,
    opts: { timeoutMs?: number } = {},
): Promise<T> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = createConnection(mgmt);
    let buf = "";
    let failed: Error | undefined;
    let wake: (() => void) | undefined;
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => {
        buf += d;
        wake?.();
    });
    sock.on("error", (err) => {
        failed =
            (err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ECONNREFUSED"
                ? new Error(
                      `the switch has no management socket at ${mgmt} (${(err as NodeJS.ErrnoException).code}); a network made before partitions existed has none: make it again`,
                  )
                : err;
        wake?.();
    });
    sock.on("close", () => wake?.());
    const until = async (done: () => boolean, what: string): Promise<void> => {
        const deadline = Date.now() + timeoutMs;
        while (!done()) {
            if (failed) throw failed;
            if (sock.destroyed) throw new Error(`the switch closed its console while ${what}`);
            const left = deadline - Date.now();
            if (left <= 0) throw new Error(`the switch's console did not answer within ${timeoutMs} ms while ${what}`);
            await new Promise<void>((r) => {
                const t = setTimeout(r, left);
                wake = () => {
                    clearTimeout(t);
                    r();
                };
            });
        }
    };
    try {
        await until(() => buf.includes("vde$ "), "waiting for its prompt");
        buf = buf.slice(buf.indexOf("vde$ ") + 5);
        const run = async (command: string): Promise<string[]> => {
            if (/[\r\n]/.test(command)) throw new Error("a switch command is one line");
            sock.write(command + "\n");
            await until(() => /^1\d{3} .*\n/m.test(buf) && buf.includes("vde$ "), `running "${command}"`);
            const reply = buf.slice(0, buf.indexOf("vde$ "));
            buf = buf.slice(buf.indexOf("vde$ ") + 5);
            const lines = reply.split("\n");
            const status = lines.map((l) => /^(1\d{3}) (.*)$/.exec(l)).find((m) => m)!;
            if (status[1] !== "1000") throw new SwitchCommandError(command, Number(status[1]), status[2]);
            const start = lines.findIndex((l) => l.startsWith("0000 DATA END WITH"));
            if (start < 0) return [];
            const end = lines.indexOf(".", start + 1);
            return lines.slice(start + 1, end < 0 ? undefined : end);
        };
        return await body({ run });
    } finally {
        sock.destroy();
    }
}

export async function listPorts(c: SwitchConsole): Promise<SwitchPort[]> {
    return parsePortPrint(await c.run("port/allprint"));
}

export async function listVlans(c: SwitchConsole): Promise<number[]> {
    return parseVlanPrint(await c.run("vlan/allprint"));
}

/** Puts `port` untagged into `vlan`, creating the VLAN when it does not exist yet. */
export async function setPortVlan(c: SwitchConsole, port: number, vlan: number): Promise<void> {
    if (vlan !== DEFAULT_VLAN && !(await listVlans(c)).includes(vlan)) await c.run(`vlan/create ${vlan}`);
    await c.run(`port/setvlan ${port} ${vlan}`);
}

/**
 * Every port back in the default VLAN and every other VLAN removed: no partition left. Also the
 * ports nothing is plugged into, because the switch hands a freed port, VLAN and all, to the
 * next VM that joins.
 */
export async function healAll(c: SwitchConsole): Promise<void> {
    for (const p of await listPorts(c))
        if (p.vlan !== DEFAULT_VLAN) await c.run(`port/setvlan ${p.port} ${DEFAULT_VLAN}`);
    for (const v of await listVlans(c)) if (v !== DEFAULT_VLAN) await c.run(`vlan/remove ${v}`);
}

/** Ports nothing is plugged into go back to the default VLAN, so a VM that joins next is not born partitioned. */
export async function resetIdlePorts(c: SwitchConsole): Promise<void> {
    for (const p of await listPorts(c))
        if (!p.active && p.vlan !== DEFAULT_VLAN) await c.run(`port/setvlan ${p.port} ${DEFAULT_VLAN}`);
}
