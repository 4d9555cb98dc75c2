/**
 * Every lifecycle module, loaded eagerly and by static imports: the far host's runner is one
 * esbuild bundle, which needs literal import paths. The `Record<ResourceName, …>` type makes this
 * table fail to compile when it and the registry disagree. (The plugin loads lazily instead, by
 * the registry's module name, so it starts without loading all five.)
 */
import * as diskImage from "./diskImage";
import * as guestCommand from "./guestCommand";
import * as network from "./network";
import type { Lifecycle } from "./placement";
import type { ResourceName } from "./registry";
import * as runScript from "./runScript";
import * as virtualMachine from "./virtualMachine";

export const LIFECYCLES: Record<ResourceName, Lifecycle> = {
    DiskImage: diskImage,
    RunScript: runScript,
    VirtualMachine: virtualMachine,
    Network: network,
    GuestCommand: guestCommand,
};
