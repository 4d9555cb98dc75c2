/**
 * Why a download failed, in the words a user acts on: which URL (never with its password or
 * query string), what happened, and what to do. `kept` says whether the bytes so far stay for
 * the next attempt to resume from (a cut connection, a stall) or were removed (wrong bytes).
 */

export type DownloadProblem =
    | "http-status"
    | "tls"
    | "connect"
    | "cut"
    | "stall"
    | "mismatch"
    | "redirects"
    | "not-found"
    | "not-a-file"
    | "sums"
    | "compression"
    | "no-space";

export class DownloadError extends Error {
    constructor(
        readonly problem: DownloadProblem,
        /** The URL as shown (already redacted). */
        readonly shownUrl: string,
        message: string,
        readonly status?: number,
    ) {
        super(message);
        this.name = "DownloadError";
    }
}
