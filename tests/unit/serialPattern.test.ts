import * as path from "node:path";
import {
    cleanConsole,
    ConsoleScanner,
    parseSerialPattern,
    serialMatcher,
    serialPatternProblem,
} from "../../provider/core/serialPattern";
import { runInChild } from "../support/tsChild";

const MODULE = path.resolve(__dirname, "../../provider/core/serialPattern.ts");

describe("serialPattern: the rule", () => {
    test("plain text is a substring, even with regex characters in it", () => {
        expect(serialMatcher("[  OK  ] Reached target")("x\n[  OK  ] Reached target Login\n")).toBe(true);
        expect(serialMatcher("a.c")("abc")).toBe(false);
    });

    test("/…/flags is a regular expression, flags i, m and s honoured", () => {
        expect(serialMatcher("/log(in)?: \\d+/")("login: 42")).toBe(true);
        expect(serialMatcher("/LOGIN/i")("login")).toBe(true);
        expect(serialMatcher("/^b$/m")("a\nb\nc")).toBe(true);
        expect(serialMatcher("/^b$/")("a\nb\nc")).toBe(false);
        expect(serialMatcher("/a.b/s")("a\nb")).toBe(true);
        expect(serialMatcher("/a.b/")("a\nb")).toBe(false);
        expect(serialMatcher("/a/gy")("xa")).toBe(true);
        // JavaScript spellings RE2 writes otherwise are translated.
        expect(serialMatcher("/\\u0041(?<n>b)\\//")("Ab/")).toBe(true);
    });

    test("syntax RE2 cannot run is refused at check with the reason and the way out", () => {
        for (const [pattern, why] of [
            ["/(a)\\1/", /invalid escape sequence: `\\1`.*no backreferences/],
            ["/a(?=b)/", /unsupported Perl syntax.*lookarounds/],
            ["/(ab/", /missing closing \)/],
            ["/a/x", /flag "x" is not supported/],
        ] as const) {
            const problem = serialPatternProblem(pattern);
            expect(problem).toMatch(why);
            expect(problem).toMatch(/serialPattern/);
        }
        expect(serialPatternProblem("(a)\\1")).toBeUndefined(); // plain text: any text is fine
        expect(serialPatternProblem("/ok/i")).toBeUndefined();
    });

    test("a catastrophic pattern on a 100 KB console answers at once (it would never return on a backtracking engine)", async () => {
        // In a child process: a backtracking matcher blocks its event loop for good, and only a kill ends it.
        const r = await runInChild(
            `const { serialMatcher } = require(${JSON.stringify(MODULE)});
             const log = "a".repeat(100 * 1024) + "b";
             const t0 = process.hrtime.bigint();
             const found = serialMatcher("/(a+)+$/")(log) || serialMatcher("/(a|aa)+c/")(log) || serialMatcher("/(.*a){20}z/s")(log);
             console.log(JSON.stringify({ found, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));`,
            30_000,
        );
        expect(r.timedOut).toBe(false);
        expect(r.stderr).toBe("");
        const { found, ms } = JSON.parse(r.stdout);
        console.log(`three catastrophic patterns on 100 KB: ${ms.toFixed(1)} ms`);
        expect(found).toBe(false);
    }, 60_000);
});

describe("ConsoleScanner: incremental search", () => {
    /** Console output as SeaBIOS and Linux give it: colours, clears, CRLF, and UTF-8 text. */
    function consoleText(n: number, seed: number): string {
        let x = seed;
        const rnd = () => (x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
        const parts = [
            "boot ",
            "é",
            "\x1b[1;32m",
            "\x1b[0m",
            "\r\n",
            "\x1bc",
            "\x1b[2J",
            "[  OK  ] ",
            "login",
            ": ",
            "\x1b[?25l",
            "abc",
        ];
        let s = "";
        for (let i = 0; i < n; i++) s += parts[Math.floor(rnd() * parts.length)];
        return s;
    }

    function cuts(s: string, pieces: number, seed: number): string[] {
        const at = new Set<number>();
        let x = seed;
        while (at.size < pieces) at.add((x = (x * 69069 + 1) >>> 0) % s.length);
        const sorted = [...at].sort((a, b) => a - b);
        return sorted.map((p, i) => s.slice(i === 0 ? 0 : sorted[i - 1], p)).concat(s.slice(sorted[sorted.length - 1]));
    }

    test("cut anywhere, even inside an escape sequence, it finds what re-reading the whole log at each poll finds", () => {
        const text = consoleText(3000, 7);
        const patterns = [
            "login: abc",
            "/OK  \\] login/",
            "/^boot/",
            "/^boot/m",
            "/abc$/",
            "/\\bogin/",
            "/é+boot/",
            "/login:\\s*\\x1b/",
            "/zzz/",
        ];
        let someFound = 0;
        for (const pattern of patterns) {
            const whole = serialMatcher(pattern);
            for (const seed of [1, 2, 3]) {
                const pieces = cuts(text, 400, seed);
                const scanner = new ConsoleScanner(parseSerialPattern(pattern), 64);
                let found = false;
                let expected = false;
                let sofar = "";
                for (const piece of pieces) {
                    found = scanner.push(piece);
                    sofar += piece;
                    // What today's poll saw: the whole log so far, less an escape sequence not finished yet.
                    expected ||= whole(cleanConsole(sofar.replace(/\x1b(?:\[[0-?]*[ -\/]*)?$/, "")));
                }
                expect({ pattern, seed, found }).toEqual({ pattern, seed, found: expected });
                if (found) someFound++;
            }
        }
        expect(someFound).toBeGreaterThan(10); // the patterns are not all misses
    });

    test("a match printed across two polls is found, and an anchored one is not invented at a cut", () => {
        const s = new ConsoleScanner(parseSerialPattern("/ready: [0-9]+ ok/"), 32);
        expect(s.push("x".repeat(1000) + "rea")).toBe(false);
        expect(s.push("dy: 12")).toBe(false);
        expect(s.push("3 ok\n")).toBe(true);

        // ^ without m is the start of the console only, not the start of what came since the last poll.
        const anchored = new ConsoleScanner(parseSerialPattern("/^login/"), 8);
        expect(anchored.push("x".repeat(100))).toBe(false);
        expect(anchored.push("login")).toBe(false);
        const lineAnchored = new ConsoleScanner(parseSerialPattern("/^login/m"), 8);
        expect(lineAnchored.push("x".repeat(100) + "\n")).toBe(false);
        expect(lineAnchored.push("login")).toBe(true);
    });

    test("a plain-text pattern keeps only its own length as overlap", () => {
        const s = new ConsoleScanner(parseSerialPattern("Welcome"), 16 * 1024);
        expect(s.overlap).toBe(6);
        expect(s.push("...Wel")).toBe(false);
        expect(s.push("\x1b[1mcome")).toBe(true);
    });
});
