import execa from "execa";
import { createHash } from "node:crypto";
import { appendFile, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as YAML from "yaml";
import { InputError } from "../../provider/core/validation";
import {
    createDiskImage,
    diffImage,
    readImage,
    removeImage,
    type DiskImageOutputs,
} from "../../provider/resources/diskImage";

/**
 * cloud-init seeds written by the real xorriso, mkfs.fat and mtools, then read back by the tools
 * cloud-init itself relies on (blkid finds the `cidata` label; the files are read from the
 * filesystem), and by our diff and read.
 */

let work: string;

beforeEach(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-seed-"));
});

afterEach(async () => {
    await rm(work, { recursive: true, force: true });
});

const USER_DATA = {
    hostname: "seed-test",
    users: [
        { name: "alice", ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly alice@test"] },
    ],
    write_files: [{ path: "/etc/motd", content: "hello from the seed\n" }],
};

async function sha256(file: string): Promise<string> {
    return createHash("sha256")
        .update(await readFile(file))
        .digest("hex");
}

async function blkid(file: string): Promise<Record<string, string>> {
    const r = await execa("blkid", ["-p", "-o", "export", file]);
    return Object.fromEntries(r.stdout.split("\n").map((l) => l.split("=", 2) as [string, string]));
}

async function isoFile(image: string, name: string): Promise<string> {
    const out = path.join(work, `extract-${name}-${Date.now()}`);
    await execa("osirrox", ["-indev", image, "-extract", `/${name}`, out]);
    return readFile(out, "utf8");
}

async function fatFile(image: string, name: string): Promise<string> {
    return (await execa("mtype", ["-i", image, `::${name}`], { env: { MTOOLS_SKIP_CHECK: "1" } })).stdout;
}

function seedInputs(stateDir: string, extra: Record<string, unknown> = {}) {
    return {
        stateDir,
        source: { kind: "cloudInit", userData: USER_DATA, metaData: { "local-hostname": "seed-test" }, ...extra },
    };
}

describe("cloud-init seed images", () => {
    test("ISO: label cidata, Rock Ridge and Joliet, the files as rendered, owner-only, under the state directory", async () => {
        const stateDir = path.join(work, "state");
        const outs = await createDiskImage(seedInputs(stateDir));
        expect(outs.format).toBe("raw");
        expect(path.dirname(outs.path)).toBe(path.join(stateDir, "images"));
        expect((await stat(outs.path)).mode & 0o777).toBe(0o600);
        expect(await blkid(outs.path)).toMatchObject({ LABEL: "cidata", TYPE: "iso9660" });
        const pvd = (await execa("isoinfo", ["-d", "-i", outs.path])).stdout;
        expect(pvd).toMatch(/Volume id: cidata/);
        expect(pvd).toMatch(/Rock Ridge signatures version \d+ found/);
        expect(pvd).toMatch(/Joliet with UCS level \d found/);
        const userData = await isoFile(outs.path, "user-data");
        expect(userData.startsWith("#cloud-config\n")).toBe(true);
        expect(YAML.parse(userData)).toEqual(USER_DATA);
        const meta = YAML.parse(await isoFile(outs.path, "meta-data"));
        expect(meta).toEqual({
            "instance-id": expect.stringMatching(/^iid-[0-9a-f]{20}$/),
            "local-hostname": "seed-test",
        });
        // Lowercase names as cloud-init opens them, kept by Rock Ridge (plain ISO 9660 would say USER_DAT.;1).
        const listing = (await execa("isoinfo", ["-R", "-l", "-i", outs.path])).stdout;
        expect(listing).toMatch(/ user-data\b/);
        expect(listing).toMatch(/ meta-data\b/);
        expect(await removeImage(outs)).toBe("removed");
    });

    for (const format of ["iso", "vfat"] as const) {
        test(`${format}: the same inputs give the same bytes, built twice and in a second state directory`, async () => {
            const a = await createDiskImage(seedInputs(path.join(work, "a"), { format }));
            await new Promise((r) => setTimeout(r, 1100)); // a second later: any clock in the bytes would show
            const b = await createDiskImage(seedInputs(path.join(work, "a"), { format }));
            const c = await createDiskImage(seedInputs(path.join(work, "elsewhere", "b"), { format }));
            expect(b.path).not.toBe(a.path);
            expect(a.inputHash).toBe(b.inputHash);
            expect(c.inputHash).toBe(a.inputHash);
            const digests = await Promise.all([a, b, c].map((o) => sha256(o.path)));
            expect(new Set(digests).size).toBe(1);
            expect(a.contentFingerprint).toBeDefined();
            expect(c.contentFingerprint).toBe(a.contentFingerprint);
        });
    }

    test("vfat: label CIDATA, the files readable with mtools", async () => {
        const outs = await createDiskImage(seedInputs(path.join(work, "state"), { format: "vfat" }));
        expect(await blkid(outs.path)).toMatchObject({ LABEL: "CIDATA", TYPE: "vfat" });
        expect(YAML.parse(await fatFile(outs.path, "user-data"))).toEqual(USER_DATA);
        expect((await stat(outs.path)).mode & 0o777).toBe(0o600);
    });

    test("diff: unchanged is a no-op; changed user data replaces (new inputHash); drift replaces", async () => {
        const stateDir = path.join(work, "state");
        const inputs = seedInputs(stateDir);
        const outs: DiskImageOutputs = await createDiskImage(inputs);
        expect(await diffImage(outs.path, outs, inputs)).toEqual({ changes: false });

        const changed = seedInputs(stateDir, { userData: { ...USER_DATA, hostname: "renamed" } });
        expect(await diffImage(outs.path, outs, changed)).toMatchObject({ changes: true, replaces: ["source"] });
        const next = await createDiskImage(changed);
        expect(next.inputHash).not.toBe(outs.inputHash);

        // Edited by hand: read reports drift, and diff replaces.
        await appendFile(outs.path, "x");
        const read = await readImage(outs.path, outs);
        expect(read.props?.drift).toMatch(/content changed/);
        expect(await diffImage(outs.path, outs, inputs)).toMatchObject({ changes: true, replaces: ["source"] });

        // Deleted behind Pulumi's back: read says gone, diff replaces.
        await rm(next.path);
        expect((await readImage(next.path, next)).id).toBe("");
        expect(await diffImage(next.path, next, changed)).toMatchObject({ changes: true, replaces: ["source"] });
    });

    test("errors from bad user data never quote it", async () => {
        const secret = "#cloud-config\nchpasswd: { list: 'root:TOPSECRET' \n";
        const err = await createDiskImage({
            stateDir: path.join(work, "state"),
            source: { kind: "cloudInit", userData: secret },
        }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(InputError);
        expect(String((err as Error).message)).toMatch(
            /source.userData starts with #cloud-config but is not valid YAML/,
        );
        expect(String((err as Error).message)).not.toContain("TOPSECRET");
    });
});
