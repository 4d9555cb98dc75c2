#!/usr/bin/env node
// Entry for running the plugin directly: `node bin/provider/plugin/main.js <engine-address>`.
import { serve } from "./serve";

serve(process.argv.slice(2)).catch((err) => {
    console.error(err instanceof Error ? err.stack ?? err.message : String(err));
    process.exit(1);
});
