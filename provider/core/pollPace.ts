/**
 * When to ask qemu-ga whether a command has ended (guest-exec-status), as pure arithmetic.
 *
 * Asking is not free: each poll is a message qemu-ga wakes for and parses on the guest's vCPU,
 * the one the command runs on. Measured on the Debian test guest under TCG, `setsid sh -c true`
 * took ~430 ms (median) when polled every 2 ms and 61–85 ms when first asked after 35–50 ms.
 * So the schedule keeps a per-socket "pace": about how long a quick command takes on that
 * guest, in ms from guest-exec's reply to the exit seen. The first poll comes just before one
 * pace, then one every pace/4 ms; after QUICK_PACES paces the wait doubles up to POLL_MAX_MS.
 */

/** The pace before any command on a socket has been timed. */
export const PACE_FIRST_MS = 30;
/** The pace stays within these: a fast guest still gets polls worth a message, a slow one is still asked. */
export const PACE_MIN_MS = 8;
export const PACE_MAX_MS = 400;
/** Polls come every pace/4 ms (at least POLL_MIN_MS) until the command has run this many paces... */
export const QUICK_PACES = 4;
export const POLL_MIN_MS = 2;
/** ...then twice as long each time, up to this. */
export const POLL_MAX_MS = 200;
/**
 * A command that ran over this many paces is taken for another kind of command (a sleep, a
 * build) and leaves the pace alone. Well above QUICK_PACES: a guest several times slower than
 * the pace (a loaded host; the first guess on a slow guest) must still be followed.
 */
export const LONG_PACES = 16;

/** The first poll: just before a quick command would be done, so until then it has the vCPU to itself. */
export function firstPollDelay(pace: number): number {
    return Math.round(pace * 0.9);
}

/** The wait between polls while the command is still within QUICK_PACES paces. */
export function pollInterval(pace: number): number {
    return Math.max(POLL_MIN_MS, Math.round(pace / 4));
}

/**
 * The pace after a command that was seen exited `at` ms after its spawn, at poll number `polls`
 * (the poll before was `before` ms after). An exit seen at the first poll says only "no later
 * than that": the pace drifts down, so the first poll keeps probing for a faster guest. A later
 * one lies between the last two polls: the pace moves toward the middle, by at most a doubling,
 * so a guest that got slower is followed. A command that ran over LONG_PACES paces is another
 * kind of command (a sleep, a build): it does not move the pace.
 */
export function nextPace(current: number, at: number, before: number, polls: number): number {
    let sample: number;
    if (polls <= 1) sample = at * 0.7;
    else if (at > current * LONG_PACES) return current;
    else sample = Math.min((before + at) / 2, current * 2);
    return Math.min(PACE_MAX_MS, Math.max(PACE_MIN_MS, current * 0.7 + sample * 0.3));
}
