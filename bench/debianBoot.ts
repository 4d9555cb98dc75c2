import * as path from "node:path";
import { createDiskImage, removeImage } from "../provider/resources/diskImage";
import type { DiskImageOutputs } from "../provider/resources/diskImage";
import * as virtualMachine from "../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../provider/resources/virtualMachine";
import { debianOverlay, debianVm, ensureDebianGuest } from "../tests/guest/debianGuest";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../tests/guest/testGuest";
import { fmtMs, fmtRatio, timed, withTempDir, type BenchResult, type Row } from "./common";

/**
 * The real Debian 12 guest (tests/guest/debianGuest.ts), booted by VirtualMachine on an overlay
 * with a cloud-init seed, to cloud-init's final stage — against the busybox test guest to its
 * ready marker, for scale. One boot of each (a Debian boot is one to two minutes under TCG), so
 * the figures are single runs. Needs the Debian image cached (a cold build adds about 1.5 min:
 * run `node bin/scripts/build-debian-image.js` first to keep this under 2 min).
 */

export async function runDebianBoot(): Promise<BenchResult> {
    const cached = await timed(() => ensureDebianGuest());
    const guest = cached.value;
    const busybox = await ensureTestGuest();
    return withTempDir("pq-bench-debian-", async (dir) => {
        const stateDir = path.join(dir, "state");
        const images: DiskImageOutputs[] = [];
        const vms: VirtualMachineOutputs[] = [];
        try {
            const overlay = await debianOverlay(guest, stateDir);
            images.push(overlay);
            const seed = await timed(() =>
                createDiskImage({
                    stateDir,
                    source: {
                        kind: "cloudInit",
                        userData: { hostname: "bench" },
                        metaData: { "local-hostname": "bench" },
                    },
                }),
            );
            images.push(seed.value);
            const debian = await timed(async () => {
                const r = await virtualMachine.create({
                    stateDir,
                    vm: debianVm(guest, "bench-debian", overlay, seed.value),
                    ready: { serialPattern: "/Cloud-init v\\. \\S+ finished at/", timeoutSeconds: 600 },
                });
                vms.push(r.outs as VirtualMachineOutputs);
            });
            await Promise.all(vms.splice(0).map((o) => virtualMachine.remove("", o)));
            const small = await timed(async () => {
                const r = await virtualMachine.create({
                    stateDir,
                    vm: {
                        name: "bench-busybox",
                        accel: "tcg",
                        kernel: busybox.kernel,
                        initrd: busybox.initrd,
                        kernelArguments: guestKernelArguments({ name: "bench-busybox" }),
                    },
                    ready: { serialPattern: READY_MARKER, timeoutSeconds: 180 },
                });
                vms.push(r.outs as VirtualMachineOutputs);
            });
            const rows: Row[] = [
                {
                    bench: "debian",
                    measure: "Debian 12 image: cached lookup (recipe + mirror Release date)",
                    provider: fmtMs(cached.ms),
                    reference: guest.buildSeconds ? `built now in ${guest.buildSeconds} s` : "",
                    ratio: "",
                    target: "",
                    verdict: "",
                },
                {
                    bench: "debian",
                    measure: "cloud-init seed DiskImage (ISO)",
                    provider: fmtMs(seed.ms),
                    reference: "",
                    ratio: "",
                    target: "",
                    verdict: "",
                },
                {
                    bench: "debian",
                    measure:
                        "first boot to cloud-init's final stage (TCG, 768 MiB, 1 run) vs the busybox test guest to its marker",
                    provider: fmtMs(debian.ms),
                    reference: `busybox ${fmtMs(small.ms)}`,
                    ratio: fmtRatio(debian.ms / small.ms),
                    target: "",
                    verdict: "",
                },
            ];
            return {
                rows,
                notes: [
                    "debian: systemd, udev, cloud-init's four stages (Python under TCG), SSH host key generation and the user's creation; the busybox guest runs one shell script. Single runs: expect ±30% with other guests on the machine.",
                ],
            };
        } finally {
            await Promise.all(vms.map((o) => virtualMachine.remove("", o).catch(() => undefined)));
            for (const i of images) await removeImage(i).catch(() => undefined);
        }
    });
}
