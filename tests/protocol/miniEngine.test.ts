import { existsSync, readFileSync, rmSync } from "node:fs";
import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { destroy, loadState, preview, refresh, up, type ProjectOptions } from "../engine/miniEngine";
import { linkPackages } from "../engine/program";
import { isSecret, SIG_KEY, UNKNOWN } from "../engine/wire";

/**
 * The mini engine itself, on a program of file-writing dynamic resources: each step kind, state
 * carried between runs, previews that touch nothing, refresh and destroy, secrets, failures.
 */

let work: string;
let files: string;
let opts: ProjectOptions;

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-mini-engine-"));
    files = path.join(work, "files");
    const dir = path.join(work, "program");
    await cp(path.join(__dirname, "fixtures", "files"), dir, { recursive: true });
    await linkPackages(dir);
    require("node:fs").mkdirSync(files);
    opts = {
        dir,
        project: "files",
        stack: "dev",
        statePath: path.join(work, "state.json"),
        config: { dir: files, content: "one" },
    };
});

afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
});

const withConfig = (config: Record<string, unknown>, extra: Partial<ProjectOptions> = {}): ProjectOptions => ({
    ...opts,
    ...extra,
    config: { ...opts.config, ...config },
});

test("up creates, passes outputs on to dependents and returns the stack outputs", async () => {
    const s = await up(opts);
    expect(s.counts).toEqual({ create: 2, update: 0, replace: 0, delete: 0, same: 0 });
    expect(readFileSync(path.join(files, "first.txt"), "utf8")).toBe("one");
    expect(readFileSync(path.join(files, "second.txt"), "utf8")).toBe(`points at ${files}/first.txt`);
    expect(s.outputs).toEqual({
        firstPath: `${files}/first.txt`,
        firstContent: "one",
        secondLength: `points at ${files}/first.txt`.length,
    });
    expect(s.logs.filter((l) => l.severity === "error")).toEqual([]);
    console.log(`mini engine: up of 2 resources took ${s.seconds.toFixed(2)} s`);
});

test("an unchanged program is all no-ops", async () => {
    const s = await up(opts);
    expect(s.counts).toEqual({ create: 0, update: 0, replace: 0, delete: 0, same: 2 });
});

test("a preview of a change counts it, touches nothing and saves no state", async () => {
    const before = readFileSync(opts.statePath, "utf8");
    const s = await preview(withConfig({ content: "two", firstName: "renamed" }));
    expect(s.counts).toMatchObject({ replace: 1, update: 1, create: 0, delete: 0 });
    // second's content names first's new path: an update whose computed length is not known yet.
    expect(s.steps.find((st) => st.urn.endsWith("::second"))?.op).toBe("update");
    expect(s.outputs.firstPath).toBe(`${files}/renamed.txt`);
    expect(s.outputs.secondLength).toBe(UNKNOWN);
    expect(readFileSync(opts.statePath, "utf8")).toBe(before);
    expect((await readdir(files)).sort()).toEqual(["first.txt", "second.txt"]);
});

test("a changed input updates in place; a changed path replaces, deleting the old after the new exists", async () => {
    let s = await up(withConfig({ content: "two" }));
    expect(s.counts).toMatchObject({ update: 1, same: 1 });
    expect(readFileSync(path.join(files, "first.txt"), "utf8")).toBe("two");
    s = await up(withConfig({ content: "two", firstName: "renamed" }));
    expect(s.counts).toMatchObject({ replace: 1, update: 1 });
    expect((await readdir(files)).sort()).toEqual(["renamed.txt", "second.txt"]);
    expect(readFileSync(path.join(files, "second.txt"), "utf8")).toBe(`points at ${files}/renamed.txt`);
});

test("a resource the program stops declaring is deleted", async () => {
    const s = await up(withConfig({ content: "two", firstName: "renamed", second: false }));
    expect(s.counts).toMatchObject({ delete: 1, same: 1 });
    expect(await readdir(files)).toEqual(["renamed.txt"]);
    expect((await loadState(opts.statePath)).resources.map((r) => r.urn.split("::").pop())).toEqual([
        "files-dev",
        "first",
    ]);
});

test("refresh drops a resource whose file is gone", async () => {
    rmSync(path.join(files, "renamed.txt"));
    const s = await refresh(opts);
    expect(s.counts).toMatchObject({ delete: 1 });
    expect((await loadState(opts.statePath)).resources.filter((r) => r.custom)).toEqual([]);
});

test("a check failure fails the run quickly with the provider's reason and changes nothing", async () => {
    const before = readFileSync(opts.statePath, "utf8");
    const t0 = Date.now();
    await expect(up(withConfig({ content: "BAD" }))).rejects.toThrow(/content must not contain BAD/);
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(readFileSync(opts.statePath, "utf8")).toBe(before);
    expect(existsSync(path.join(files, "first.txt"))).toBe(false);
});

test("a secret input stays secret in the outputs of a provider that refuses secrets", async () => {
    const s = await up(withConfig({ secretContent: "hunter2" }, { secretConfig: ["secretContent"] }));
    expect(readFileSync(path.join(files, "first.txt"), "utf8")).toBe("hunter2");
    expect(s.outputs.firstContent).toEqual({ [SIG_KEY]: expect.any(String), value: "hunter2" });
    const first = (await loadState(opts.statePath)).resources.find((r) => r.urn.endsWith("::first"))!;
    expect(isSecret(first.inputs.content)).toBe(true);
    expect(isSecret(first.outputs.content)).toBe(true);
    // length is computed from the secret, but has no input of its name: the engine cannot know.
    expect(first.outputs.length).toBe(7);
});

test("destroy deletes everything, dependents first", async () => {
    await up(opts);
    expect((await readdir(files)).sort()).toEqual(["first.txt", "second.txt"]);
    const s = await destroy(opts);
    expect(s.counts.delete).toBe(3);
    expect(await readdir(files)).toEqual([]);
    expect((await loadState(opts.statePath)).resources).toEqual([]);
});
