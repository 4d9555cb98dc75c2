import {
    firstPollDelay,
    nextPace,
    PACE_FIRST_MS,
    PACE_MAX_MS,
    PACE_MIN_MS,
    pollInterval,
    POLL_MIN_MS,
    QUICK_PACES,
    LONG_PACES,
} from "../../provider/core/pollPace";

/**
 * The qemu-ga poll schedule (provider/core/pollPace.ts): the pace follows how long quick
 * commands take, whether the guest is faster or slower than thought, and is not pulled away by
 * a long command. Simulated here against a guest whose commands take a known time, polled as
 * qgaChannel.ts polls (first at firstPollDelay, then every pollInterval; each answer `rtt` late).
 */

function simulate(pace: number, commandMs: number, rtt = 3): { pace: number; seenAt: number; polls: number } {
    let t = firstPollDelay(pace);
    let before = 0;
    let polls = 0;
    for (;;) {
        polls++;
        const at = t + rtt;
        if (t >= commandMs) return { pace: nextPace(pace, at, before, polls), seenAt: at, polls };
        before = at;
        t = at + pollInterval(pace);
    }
}

test("the first poll comes just before one pace; the interval is a quarter pace, never under POLL_MIN_MS", () => {
    expect(firstPollDelay(50)).toBe(45);
    expect(pollInterval(60)).toBe(15);
    expect(pollInterval(1)).toBe(POLL_MIN_MS);
});

test("a guest slower than the first guess: the pace rises to it and the exit is then seen within a few polls", () => {
    let pace = PACE_FIRST_MS;
    let last = { pace, seenAt: 0, polls: 0 };
    for (let i = 0; i < 30; i++) ((last = simulate(pace, 60)), (pace = last.pace));
    expect(pace).toBeGreaterThan(50);
    expect(pace).toBeLessThan(80);
    expect(last.polls).toBeLessThanOrEqual(3);
    expect(last.seenAt).toBeLessThan(60 + pollInterval(pace) + 2 * 3 + 1);
});

test("a guest faster than thought: the pace comes down toward its commands' time", () => {
    let pace = 200;
    for (let i = 0; i < 40; i++) pace = simulate(pace, 20).pace;
    expect(pace).toBeLessThan(35);
    expect(pace).toBeGreaterThanOrEqual(PACE_MIN_MS);
});

test("a guest five times slower than the first guess (a loaded host) is followed too, not polled every few ms for good", () => {
    let pace = PACE_FIRST_MS;
    let last = { pace, seenAt: 0, polls: 0 };
    for (let i = 0; i < 30; i++) ((last = simulate(pace, 5 * PACE_FIRST_MS)), (pace = last.pace));
    expect(pace).toBeGreaterThan(3 * PACE_FIRST_MS);
    expect(last.polls).toBeLessThanOrEqual(4);
    // Three times slower than that still within reach: a true at 264 ms, as measured under load.
    for (let i = 0; i < 30; i++) ((last = simulate(pace, 264)), (pace = last.pace));
    expect(pace).toBeGreaterThan(180);
    expect(last.polls).toBeLessThanOrEqual(4);
});

test("a long command leaves the pace alone; a much slower guest is followed at most a doubling at a time", () => {
    expect(nextPace(50, 5000, 4800, 20)).toBe(50);
    expect(nextPace(50, LONG_PACES * 50 + 1, LONG_PACES * 50 - 100, 12)).toBe(50);
    expect(nextPace(50, QUICK_PACES * 50, QUICK_PACES * 50 - 12, 8)).toBeCloseTo(50 * 0.7 + 100 * 0.3);
    expect(nextPace(PACE_MAX_MS, PACE_MAX_MS * 2, PACE_MAX_MS * 2 - 50, 3)).toBe(PACE_MAX_MS);
    expect(nextPace(PACE_MIN_MS, 1, 0, 1)).toBe(PACE_MIN_MS);
});
