/**
 * The TCP ports something listens on, from the text of a Linux guest's /proc/net/tcp and
 * /proc/net/tcp6: present in every Linux guest, unlike ss or netstat. Each row has
 * `local_address` as HEXADDR:HEXPORT and `st` 0A for LISTEN.
 */
export function listeningTcpPorts(procNetText: string): Set<number> {
    const ports = new Set<number>();
    for (const line of procNetText.split("\n")) {
        const cols = line.trim().split(/\s+/);
        if (cols.length < 4 || !/^\d+:$/.test(cols[0])) continue;
        const m = /:([0-9A-Fa-f]{4})$/.exec(cols[1]);
        if (m && cols[3].toUpperCase() === "0A") ports.add(parseInt(m[1], 16));
    }
    return ports;
}
