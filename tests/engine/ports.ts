import * as net from "node:net";

/** The first of `n` consecutive TCP ports free on loopback (the example forwards firstPort + i). */
export async function consecutiveFreePorts(n: number): Promise<number> {
    for (let attempt = 0; attempt < 50; attempt++) {
        const first = 20000 + Math.floor(Math.random() * 40000);
        const held: net.Server[] = [];
        try {
            for (let i = 0; i < n; i++) held.push(await listen(first + i));
            return first;
        } catch {
            // taken; try elsewhere
        } finally {
            await Promise.all(held.map((s) => new Promise((r) => s.close(r))));
        }
    }
    throw new Error(`found no ${n} consecutive free ports`);
}

function listen(port: number): Promise<net.Server> {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.once("error", reject).listen(port, "127.0.0.1", () => resolve(server));
    });
}
