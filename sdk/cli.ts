#!/usr/bin/env node
import { main } from "./debugCommand";

/** `npx pulumi-qemu …`: the debug command (sdk/debugCommand.ts). */
main(process.argv.slice(2), { input: process.stdin, output: process.stdout, errors: process.stderr }).then(
    (code) => process.exit(code),
    (err: Error) => {
        process.stderr.write(`pulumi-qemu: ${err.message}\n`);
        process.exit(1);
    },
);
