import execa from "execa";

/**
 * A stand-in machine on a VDE switch without booting a guest: a fresh unprivileged user + network
 * namespace whose only interface is a tap plugged into the switch by `vde_plug2tap`, running a
 * busybox shell script there (udhcpc, nslookup, ping). The plug dies with the script.
 * Used to test the network's own parts (DHCP, DNS, partitions) quickly and with real tools.
 */
export interface NetnsRun {
    stdout: string;
    stderr: string;
    exitCode: number;
}

/**
 * Runs `script` (busybox sh) in its own namespace on the switch at `switchDir`, with `tap0`
 * up and carrying `mac`. `$UDHCPC_SCRIPT` names a udhcpc script that applies the lease to tap0.
 */
export async function runOnSwitch(
    switchDir: string,
    mac: string,
    script: string,
    opts: { timeoutMs?: number } = {},
): Promise<NetnsRun> {
    const r = await startOnSwitch(switchDir, mac, script, opts);
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode ?? -1 };
}

/**
 * The same, left running: for a stand-in that must stay on the switch while others probe it.
 * With `plugPidfile`, the plug writes its pid there (it names the stand-in's switch port).
 */
export function startOnSwitch(
    switchDir: string,
    mac: string,
    script: string,
    opts: { timeoutMs?: number; plugPidfile?: string } = {},
) {
    const setup = [
        "set -e",
        'sw="$1"; mac="$2"; tmp=$(mktemp -d); plugpid="${3:-$tmp/plug.pid}"',
        'trap \'kill $(cat "$plugpid" 2>/dev/null) 2>/dev/null; rm -rf "$tmp"\' EXIT',
        "ip link set lo up",
        'vde_plug2tap --daemon --pidfile "$plugpid" --sock "$sw" tap0',
        "i=0; until ip link show tap0 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 500 ]; sleep 0.01; done",
        'ip link set tap0 address "$mac"',
        "ip link set tap0 up",
        'UDHCPC_SCRIPT="$tmp/udhcpc.sh"',
        'printf \'%s\\n\' \'#!/bin/sh\' \'[ "$1" = bound ] && ip addr add "$ip/$mask" dev "$interface"; echo "$1 ip=$ip dns=$dns domain=$domain hostname=$hostname router=$router"; exit 0\' > "$UDHCPC_SCRIPT"',
        'chmod 700 "$UDHCPC_SCRIPT"',
        "set +e",
        script,
    ].join("\n");
    return execa(
        "unshare",
        [
            "--user",
            "--map-root-user",
            "--net",
            "--",
            "sh",
            "-c",
            setup,
            "netns-client",
            switchDir,
            mac,
            ...(opts.plugPidfile ? [opts.plugPidfile] : []),
        ],
        {
            reject: false,
            timeout: opts.timeoutMs ?? 30_000,
            killSignal: "SIGKILL",
            stdin: "ignore",
        },
    );
}
