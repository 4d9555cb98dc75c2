#!/usr/bin/env node
// The plugin's entry: `node bin/provider/plugin/main.js <engine-address>`, and package.json's `main`,
// which is what Pulumi's nodejs language host loads when it runs the plugin from the package's
// directory (@pulumi/pulumi/cmd/run-plugin requires the directory). The library is `exports["."]`
// (sdk/index.ts), so importing pulumi-qemu never gets here.
import { serve } from "./serve";

serve(process.argv.slice(2)).catch((err) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
});
