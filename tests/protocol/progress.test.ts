
describe("progress of a directory image through our plugin", () => {
    let driver: Driver;
    let dir: string;

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), "pq-prog-d-"));
        // A status line every 50 ms: building a small image takes a few of them.
        driver = await openDriver("qemu", { env: { PULUMI_QEMU_PROGRESS_SECONDS: "0.05" } });
    }, 60_000);

    afterAll(async () => {
        await driver?.close();
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("building the ext4 image reports the directory, its entries and the time so far, tied to the resource", async () => {
        const tree = path.join(dir, "tree");
        await mkdir(tree);
        for (let i = 0; i < 64; i++) await writeFile(path.join(tree, `f${i}`), Buffer.alloc(128 * 1024, i));
        const urn = driver.urn("DiskImage", "rootfs");
        const checked = await driver.plugin.check(urn, {}, driver.news("DiskImage", { stateDir: path.join(dir, "s"), source: { kind: "directory", path: tree, size: "64M" } }));
        expect(checked.failures).toEqual([]);
        const made = await driver.plugin.create(urn, checked.inputs);
        const building = driver.engine.logs.filter((l) => l.message.startsWith(`building the ext4 image of ${tree} (`));
        expect(building.length).toBeGreaterThanOrEqual(1);
        expect(building[0].message).toMatch(/ entries into 64 MiB\): \d+ s$/);
        expect(building.every((l) => l.urn === urn && l.ephemeral && l.severity === "info")).toBe(true);
        await driver.plugin.delete(made.id, urn, made.properties, checked.inputs);
        expect(driver.engine.errors()).toEqual([]);
    }, 60_000);
});
