/**
 * The runner's wire: one JSON object per line each way. The near side sends requests; the far
 * side answers each id once with `result` or `error`, and may send `status`/`warning` lines for
 * it before that (progress, as the lifecycles report it locally).
 */
export interface RunnerRequest {
    id: number;
    kind: string;
    method: string;
    args: unknown[];
}

export interface WireError {
    name: string;
    message: string;
    problems?: Array<{ property: string; reason: string }>;
}

export type RunnerReply =
    | { hello: 1; node: string; pid: number }
    | { id: number; result: unknown }
    | { id: number; error: WireError }
    | { id: number; status: string }
    | { id: number; warning: string };

/** The lifecycle methods a runner serves; `remove` is delete. */
export const RUNNER_METHODS = ["check", "diff", "create", "read", "update", "remove"] as const;
