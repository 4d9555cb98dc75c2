import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import {
    chmodSync,
    chownSync,
    copyFileSync,
    existsSync,
    mkdirSync,
    mkdtempSync,
    readFileSync,
    rmSync,
    writeFileSync,
} from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "./net";

/**
 * "The far host" for remote tests: this machine reached only through a real OpenSSH server
 * (Debian's sshd) on a loopback port, with a host key and a client key made for the run. Run as
 * root (as CI is), sshd logs in a separate unprivileged user, `pqfar`, with its own home and
 * hence its own default state directory, and its own copy of the guest files; so nothing the
 * far side does can use the near side's files by accident. Without root it cannot make a user
 * and fails loudly.
 */

export let FAR_USER = "pqfar";

/**
 * Makes later far hosts log in `name` instead of pqfar: for a run that must not share the far user
 * with tests running at the same time (a far host's start and stop kill all of that user's processes).
 */
export function useFarUser(name: string): void {
    FAR_USER = name;
}

export interface FarHost {
    /** `ssh://pqfar@127.0.0.1:PORT` */
    url: string;
    port: number;
    user: string;
    home: string;
    identityFile: string;
    knownHosts: string;
    /** The host spec as a resource's `host` input takes it. */
    host: { url: string; identityFile: string; knownHosts: string };
    /** Copies a file into the far user's home (owned by them) and returns its path there. */
    give(file: string, name?: string): string;
    /** Runs a command as the far user (through su, not ssh): for checks on the far side. */
    asFarUser(command: string): string;
    /** Stops sshd, then everything the far user still runs (a test's leftovers). */
    stop(): Promise<void>;
    /** Stops sshd only (an unreachable host); `start` brings it back on the same port and keys. */
    pause(): Promise<void>;
    resume(): Promise<void>;
}

const SSHD = "/usr/sbin/sshd";

export async function startFarHost(): Promise<FarHost> {
    if (process.getuid?.() !== 0)
        throw new Error(
            "the far-host tests need root: they create the unprivileged user pqfar that sshd logs in (CI runs as root)",
        );
    if (!existsSync(SSHD))
        throw new Error(`${SSHD} is missing: apt-get install openssh-server (scripts/setup.sh installs it)`);
    const user = FAR_USER;
    // One far host per user at a time: starting one wipes the user's state and stopping one kills
    // the user's processes, so test files run in parallel (jest without --runInBand) take turns.
    const lock = await holdLock(`/run/lock/pulumi-qemu-test-far-${user}.lock`, 15 * 60_000);
    ensureUser();
    const home = `/home/${FAR_USER}`;
    // A clean far host each run: no state, runner cache or keys from an earlier one.
    execFileSync("sh", [
        "-c",
        `pkill -KILL -u ${FAR_USER} || true; rm -rf ${home}/.local ${home}/.cache ${home}/.ssh ${home}/files`,
    ]);
    const dir = mkdtempSync(path.join(os.tmpdir(), "pq-far-"));
    const keygen = (file: string) =>
        execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "pq-test", "-f", file]);
    keygen(path.join(dir, "host_key"));
    keygen(path.join(dir, "client_key"));
    const port = await freePort();
    const hostPub = readFileSync(path.join(dir, "host_key.pub"), "utf8").trim().split(" ").slice(0, 2).join(" ");
    const knownHosts = path.join(dir, "known_hosts");
    writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostPub}\n`, { mode: 0o600 });

    const sshDir = path.join(home, ".ssh");
    mkdirSync(sshDir, { recursive: true, mode: 0o700 });
    writeFileSync(path.join(sshDir, "authorized_keys"), readFileSync(path.join(dir, "client_key.pub")), {
        mode: 0o600,
    });
    const { uid, gid } = ids();
    chownSync(sshDir, uid, gid);
    chownSync(path.join(sshDir, "authorized_keys"), uid, gid);
    mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });

    const config = path.join(dir, "sshd_config");
    writeFileSync(
        config,
        [
            `ListenAddress 127.0.0.1:${port}`,
            `HostKey ${path.join(dir, "host_key")}`,
            `PidFile ${path.join(dir, "sshd.pid")}`,
            `AllowUsers ${FAR_USER}`,
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "UsePAM no",
            "PermitRootLogin no",
            "AllowStreamLocalForwarding yes",
            "StreamLocalBindUnlink yes",
            "MaxSessions 50",
            "MaxStartups 50",
            "LogLevel ERROR",
        ].join("\n") + "\n",
    );
    let sshd: ChildProcess | undefined;
    const start = async () => {
        sshd = spawn(SSHD, ["-D", "-e", "-f", config], { stdio: ["ignore", "ignore", "pipe"] });
        let err = "";
        sshd.stderr!.on("data", (d) => (err += d));
        const deadline = Date.now() + 10_000;
        while (!(await accepts(port))) {
            if (sshd.exitCode !== null) throw new Error(`sshd exited: ${err}`);
            if (Date.now() > deadline) throw new Error(`sshd did not listen on ${port} within 10 s: ${err}`);
            await new Promise((r) => setTimeout(r, 50));
        }
    };
    const halt = async () => {
        if (!sshd || sshd.exitCode !== null) return;
        const gone = new Promise((r) => sshd!.once("exit", r));
        sshd.kill("SIGTERM");
        await gone;
    };
    await start();
    const url = `ssh://${FAR_USER}@127.0.0.1:${port}`;
    const identityFile = path.join(dir, "client_key");
    return {
        url,
        port,
        user: FAR_USER,
        home,
        identityFile,
        knownHosts,
        host: { url, identityFile, knownHosts },
        give(file, name = path.basename(file)) {
            const target = path.join(home, "files", name);
            mkdirSync(path.dirname(target), { recursive: true, mode: 0o700 });
            copyFileSync(file, target);
            chmodSync(target, 0o600);
            chownSync(path.dirname(target), uid, gid);
            chownSync(target, uid, gid);
            return target;
        },
        asFarUser(command) {
            return execFileSync(
                "setpriv",
                ["--reuid", String(uid), "--regid", String(gid), "--init-groups", "--", "sh", "-c", command],
                {
                    encoding: "utf8",
                    env: { HOME: home, PATH: "/usr/local/bin:/usr/bin:/bin" },
                    cwd: "/",
                },
            );
        },
        pause: halt,
        resume: start,
        async stop() {
            await halt();
            // Whatever a test left running as the far user (runners, QEMU, switches) goes with it.
            try {
                execFileSync("pkill", ["-KILL", "-u", FAR_USER]);
            } catch {
                // nothing was running
            }
            rmSync(dir, { recursive: true, force: true });
            lock.stdin!.end(); // cat ends, and flock with it, which lets the lock go
        },
    };
}

/** An exclusive flock(1) on `file`, held by a child process until it is killed (or we die: pdeathsig). */
async function holdLock(file: string, deadlineMs: number): Promise<ChildProcess> {
    const holder = spawn(
        "setpriv",
        [
            "--pdeathsig",
            "KILL",
            "--",
            "flock",
            "--exclusive",
            "--timeout",
            String(Math.ceil(deadlineMs / 1000)),
            file,
            "sh",
            "-c",
            "echo locked; exec cat",
        ],
        {
            stdio: ["pipe", "pipe", "pipe"],
        },
    );
    const got = await new Promise<boolean>((resolve) => {
        holder.stdout!.once("data", () => resolve(true));
        holder.once("exit", () => resolve(false));
    });
    if (!got)
        throw new Error(
            `could not lock ${file} within ${deadlineMs / 1000} s: another far host of this user is still running`,
        );
    return holder;
}

function ensureUser(): void {
    try {
        execFileSync("id", ["-u", FAR_USER], { stdio: "ignore" });
    } catch {
        execFileSync("useradd", ["--create-home", "--shell", "/bin/sh", "--user-group", FAR_USER]);
    }
    // sshd refuses a locked account (a "!" password) even for keys when PAM is off; "*" is unlocked but has no password.
    execFileSync("usermod", ["-p", "*", FAR_USER]);
    chmodSync(`/home/${FAR_USER}`, 0o700);
}

function ids(): { uid: number; gid: number } {
    const uid = Number(execFileSync("id", ["-u", FAR_USER], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", FAR_USER], { encoding: "utf8" }).trim());
    return { uid, gid };
}

function accepts(port: number): Promise<boolean> {
    return new Promise((resolve) => {
        const s = net.connect(port, "127.0.0.1");
        s.once("connect", () => {
            s.destroy();
            resolve(true);
        });
        s.once("error", () => resolve(false));
    });
}

/**
 * The test guest's kernel and initrd at one path both sides can read (a 0755 directory, 0644
 * files), so a VM spec is the same text here and on the far host. Remove `dir` when done.
 */
export async function sharedGuestFiles(guest: {
    kernel: string;
    initrd: string;
}): Promise<{ dir: string; kernel: string; initrd: string }> {
    const dir = mkdtempSync(path.join(os.tmpdir(), "pq-far-guest-"));
    chmodSync(dir, 0o755);
    const kernel = path.join(dir, "vmlinuz");
    const initrd = path.join(dir, "initrd");
    for (const [from, to] of [
        [guest.kernel, kernel],
        [guest.initrd, initrd],
    ]) {
        copyFileSync(from, to);
        chmodSync(to, 0o644);
    }
    return { dir, kernel, initrd };
}
