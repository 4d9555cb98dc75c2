import {
    openRecord,
    sealRecord,
    snapshotMismatch,
    snapshotNameProblem,
    snapshotProblems,
    snapshotTag,
    type SnapshotRecord,
} from "../../provider/core/snapshotRules";
import { parseVmSpec } from "../../provider/core/vmSpec";

const base = { kernel: "/k", initrd: "/i" };

describe("which VMs can be snapshotted", () => {
    test("a writable qcow2 disk (or a raw disk with an overlay) and nothing else: no problems", () => {
        expect(
            snapshotProblems(parseVmSpec({ ...base, disks: [{ path: "/d.qcow2", format: "qcow2" }] }, "vm")),
        ).toEqual([]);
        expect(
            snapshotProblems(
                parseVmSpec(
                    {
                        ...base,
                        disks: [
                            { path: "/base.raw", format: "raw", overlay: "/ov.qcow2" },
                            { path: "/ro.raw", format: "raw", readOnly: true },
                        ],
                    },
                    "vm",
                ),
            ),
        ).toEqual([]);
    });

    test("shares, volatile, a writable raw disk and no qcow2 disk are each refused naming the field and the way out", () => {
        const problems = snapshotProblems(
            parseVmSpec(
                { ...base, volatile: true, shares: [{ source: "/src" }], disks: [{ path: "/d.raw", format: "raw" }] },
                "vm",
            ),
        );
        expect(problems.map((p) => p.property)).toEqual(["vm.shares", "vm.volatile", "vm.disks[0]"]);
        expect(problems[0].reason).toMatch(/virtio-9p share blocks QEMU from saving.*copyToGuest or a DiskImage/);
        expect(problems[1].reason).toMatch(/snapshot=on.*drop volatile/);
        expect(problems[2].reason).toMatch(/writable raw disk cannot hold an internal snapshot.*overlay/);
        const none = snapshotProblems(
            parseVmSpec({ ...base, disks: [{ path: "/ro.qcow2", format: "qcow2", readOnly: true }] }, "vm"),
        );
        expect(none).toEqual([
            {
                property: "vm.disks",
                reason: expect.stringMatching(/has none; add one, e.g. a small blank qcow2 DiskImage/),
            },
        ]);
    });

    test("names are plain file names", () => {
        expect(snapshotNameProblem("clean-1.0_a")).toBeUndefined();
        for (const bad of ["", "../x", "a/b", ".hidden", "a b", "x".repeat(65), 3])
            expect(snapshotNameProblem(bad)).toMatch(/snapshot name must be/);
        expect(snapshotTag("clean")).toBe("pq-snap-clean");
    });
});

describe("records", () => {
    const record: SnapshotRecord = {
        tool: "pulumi-qemu",
        kind: "snapshot",
        version: 1,
        name: "clean",
        tag: "pq-snap-clean",
        createdAt: "2026-11-30T00:00:00.000Z",
        vmstateFile: "/d.qcow2",
        disks: [{ file: "/d.qcow2", id: "1", dateSec: 100, dateNsec: 5, vmStateSize: 4096 }],
        saveMs: 10,
    };
    const listed = (over: Record<string, unknown> = {}) =>
        new Map([
            [
                "/d.qcow2",
                [{ id: "1", name: "pq-snap-clean", "vm-state-size": 4096, "date-sec": 100, "date-nsec": 5, ...over }],
            ],
        ]);

    test("a sealed record opens to itself; any change to it is caught by its checksum", () => {
        const text = sealRecord(record);
        expect(openRecord(text)).toEqual({ record });
        expect(openRecord(text.replace('"saveMs": 10', '"saveMs": 11'))).toEqual({
            problem: "its record's checksum does not match its content",
        });
        expect(openRecord("{not json")).toEqual({ problem: "its record is not JSON" });
        expect(openRecord(JSON.stringify({ tool: "x" }))).toEqual({
            problem: "its record is not a pulumi-qemu snapshot record",
        });
    });

    test("the qcow2 snapshots must be the recorded ones", () => {
        expect(snapshotMismatch(record, listed())).toBeUndefined();
        expect(snapshotMismatch(record, new Map())).toMatch(/no longer open/);
        expect(snapshotMismatch(record, new Map([["/d.qcow2", []]]))).toMatch(/has no snapshot pq-snap-clean any more/);
        expect(snapshotMismatch(record, listed({ id: "2", "date-sec": 200 }))).toMatch(
            /holds a different snapshot pq-snap-clean \(id 2, made at 200/,
        );
        expect(snapshotMismatch(record, listed({ "vm-state-size": 1 }))).toMatch(/different snapshot/);
    });
});
