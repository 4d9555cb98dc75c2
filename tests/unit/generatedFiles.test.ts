import { readFileSync } from "node:fs";
import * as path from "node:path";
import { generatedFiles } from "../../scripts/generate/files";

/**
 * The files written from the zod specs (sdk/generatedTypes.ts, docs/reference.md) are what the
 * specs say today: a field added to a spec without `npm run generate` fails here, as does a
 * hand edit of a generated file.
 */

const ROOT = path.join(__dirname, "..", "..");

test.each(Object.entries(generatedFiles()))("%s is up to date with the specs (npm run generate)", (rel, text) => {
    expect(readFileSync(path.join(ROOT, rel), "utf8")).toBe(text);
});
