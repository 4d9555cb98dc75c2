/**
 * Quoting one word for POSIX sh, the one way every part of the provider does it: launchers, the
 * commands sent to a far host over SSH, the shell agent's scripts and the test API's commands.
 * A word made only of characters sh never interprets is left bare (launchers stay readable);
 * anything else is single-quoted, each ' written as '\''. NUL cannot be in an argv or a shell's
 * text at all, so it is refused rather than silently cut.
 */
export function shellQuote(word: string): string {
    if (word.includes("\0")) throw new Error("a shell word cannot contain NUL");
    if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
    return `'${word.replace(/'/g, `'\\''`)}'`;
}
