import { withCallDeadline } from "../../provider/host/callDeadline";
import { runTool, ToolTimeoutError } from "../../provider/host/process/toolRun";

/**
 * A tool run during a call with customTimeouts (provider/host/callDeadline.ts) is stopped at the
 * call's deadline, as by its own timeout, and the error names the limit; outside such a call it
 * runs to its end.
 */

test("a tool past the call's customTimeouts is stopped then, naming it", async () => {
    const t0 = Date.now();
    const err = await withCallDeadline(1, "create", () => runTool("sleep", ["20"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolTimeoutError);
    expect((err as Error).message).toMatch(/did not finish within the resource's customTimeouts\.create \(1 s\)/);
    expect(Date.now() - t0).toBeLessThan(10_000);
});

test("without a call deadline the tool runs to its end", async () => {
    const r = await runTool("sh", ["-c", "sleep 1; echo done"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe("done");
});
