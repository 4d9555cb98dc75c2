/**
 * The QEMU argv a launcher runs, read back from its text: the inverse of renderLauncher's
 * `exec WORD \
 *     WORD … "$@"` line, whose words are plain or single-quoted by shellQuote ('\'' for a
 * quote). Only our own launchers are read this way; anything else yields undefined.
 */
export function launcherArgv(text: string): string[] | undefined {
    const start = text.search(/^exec /m);
    if (start < 0) return undefined;
    const words: string[] = [];
    let i = start + "exec ".length;
    for (;;) {
        // Between words: spaces, and the backslash-newline that continues the command.
        while (i < text.length && (text[i] === " " || (text[i] === "\\" && text[i + 1] === "\n"))) i += text[i] === "\\" ? 2 : 1;
        if (text.startsWith('"$@"', i)) return words.length ? words : undefined;
        if (i >= text.length || text[i] === "\n") return undefined;
        let word = "";
        while (i < text.length && text[i] !== " " && text[i] !== "\n") {
            if (text[i] === "'") {
                const end = text.indexOf("'", i + 1);
                if (end < 0) return undefined;
                word += text.slice(i + 1, end);
                i = end + 1;
            } else if (text[i] === "\\" && i + 1 < text.length && text[i + 1] !== "\n") {
                word += text[i + 1];
                i += 2;
            } else if (text[i] === "\\") {
                break;
            } else {
                word += text[i++];
            }
        }
        words.push(word);
    }
}
