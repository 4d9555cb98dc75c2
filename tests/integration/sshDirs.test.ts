import { existsSync, mkdirSync, rmSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SshConnection } from "../../provider/host/ssh/sshConnection";

/**
 * A process stopped by a signal runs no exit handler, so its SSH control directory stays;
 * the next process that opens a connection removes those of processes that are gone, and
 * leaves those of live ones (their masters are in use).
 */
test("control directories of gone processes are swept; a live process's are kept; each connection's own goes on close", () => {
    const gone = path.join(os.tmpdir(), "pulumi-qemu-ssh-4194303-abcdef");
    const live = path.join(os.tmpdir(), `pulumi-qemu-ssh-${process.ppid}-abcdef`);
    mkdirSync(gone, { recursive: true });
    mkdirSync(live, { recursive: true });
    try {
        const c = new SshConnection({ url: "ssh://h:22", hostname: "h", port: 22 });
        expect(existsSync(gone)).toBe(false);
        expect(existsSync(live)).toBe(true);
        const own = path.dirname(c.controlPath());
        expect(path.basename(own).startsWith(`pulumi-qemu-ssh-${process.pid}-`)).toBe(true);
        c.closeSync();
        expect(existsSync(own)).toBe(false);
    } finally {
        rmSync(gone, { recursive: true, force: true });
        rmSync(live, { recursive: true, force: true });
    }
});
