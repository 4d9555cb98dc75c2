// Bundles the lifecycles into the one file a far host runs (provider/runner/main.ts), gzipped:
// the package ships it at ~0.3 MB instead of ~1.2 MB; the near side unpacks it before copying it over.
// Minified to keep the copy small; names kept so errors read the same as locally.
const esbuild = require("esbuild");
const { gzipSync } = require("node:zlib");
const { writeFileSync } = require("node:fs");
const path = require("node:path");

const outDir = path.join(__dirname, "..", "bin", "provider", "runner");
const result = esbuild.buildSync({
    entryPoints: [path.join(outDir, "main.js")],
    bundle: true,
    minify: true,
    keepNames: true,
    platform: "node",
    target: "node18",
    // A native addon cannot travel in a bundle; fileDigest falls back to b3sum or JavaScript without it.
    external: ["@napi-rs/blake-hash"],
    write: false,
    logLevel: "warning",
});
writeFileSync(path.join(outDir, "runner.bundle.js.gz"), gzipSync(result.outputFiles[0].contents, { level: 9 }));
