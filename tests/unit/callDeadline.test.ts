import {
    boundedDeadline,
    callDeadline,
    callRemainingMs,
    parseTimeout,
    withCallDeadline,
} from "../../provider/host/callDeadline";

/** customTimeouts as the lifecycles see them (provider/host/callDeadline.ts). */

test("Pulumi's duration syntax, in seconds; anything else refused naming the field", () => {
    expect(parseTimeout("30s", "customTimeouts.create")).toBe(30);
    expect(parseTimeout("5m", "x")).toBe(300);
    expect(parseTimeout("1h30m", "x")).toBe(5400);
    expect(parseTimeout("1.5h", "x")).toBe(5400);
    expect(parseTimeout("500ms", "x")).toBe(0.5);
    expect(parseTimeout(undefined, "x")).toBeUndefined();
    expect(parseTimeout("", "x")).toBeUndefined();
    expect(() => parseTimeout("5 minutes", "customTimeouts.delete")).toThrow(
        /customTimeouts\.delete must be a duration such as "30s"/,
    );
    expect(() => parseTimeout("10", "x")).toThrow(/duration/);
    expect(() => parseTimeout(30, "x")).toThrow(/duration/);
});

test("no deadline outside a call; inside, a default wait follows it both ways and a chosen one is capped", async () => {
    expect(callDeadline()).toBeUndefined();
    expect(boundedDeadline(1234, true)).toEqual({ at: 1234 });
    const now = Date.now();
    await withCallDeadline(600, "create", async () => {
        const call = callDeadline()!;
        expect(call.what).toBe("customTimeouts.create (600 s)");
        expect(call.at).toBeGreaterThanOrEqual(now + 600_000);
        // A default wait of 120 s is stretched to the call's 600 s; one the user chose (120 s) is kept.
        expect(boundedDeadline(now + 120_000, true)).toEqual({ at: call.at, by: call.what });
        expect(boundedDeadline(now + 120_000, false)).toEqual({ at: now + 120_000 });
        // A chosen wait longer than the call's is cut to it.
        expect(boundedDeadline(now + 3_600_000, false)).toEqual({ at: call.at, by: call.what });
        // Carried through awaits.
        await new Promise((r) => setTimeout(r, 5));
        expect(callRemainingMs()!).toBeLessThanOrEqual(600_000);
    });
    expect(callDeadline()).toBeUndefined();
    await withCallDeadline(undefined, "delete", async () => expect(callDeadline()).toBeUndefined());
});
