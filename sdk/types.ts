import type * as pulumi from "@pulumi/pulumi";

/**
 * The SDK's input types. Each resource's Args and the value types they use (VmSpecArgs,
 * DiskImageSource, ReadyArgs…) are generated from the zod specs into generatedTypes.ts, doc
 * comments included (`npm run generate`); what is written here is how they take Pulumi Inputs.
 */
export type {
    DiskImageArgs,
    DiskImageSource,
    GuestCommandArgs,
    NetworkArgs,
    ReadyArgs,
    RunScriptArgs,
    VirtualMachineArgs,
    VmSpecArgs,
} from "./generatedTypes";

/** The VirtualMachine outputs a GuestCommand takes as its `vm` (a VM's stack output has them all). */
export type VmReferenceArgs = import("./generatedTypes").VmReferenceOutput;

/**
 * Every field of T, at every depth, may be a Pulumi Input (an Output of another resource, a
 * promise…). Unions are taken whole — a field of type "raw" | "qcow2" takes an
 * Output<"raw" | "qcow2">, as the SDK's own outputs are typed — except a single string literal
 * (a source's `kind`), kept plain so that TypeScript can tell the variants of a union apart.
 */
export type DeepInput<T> =
    IsTag<T> extends true
        ? T
        : [T] extends [string | number | boolean]
          ? pulumi.Input<T>
          : [T] extends [ReadonlyArray<infer U>]
            ? pulumi.Input<ReadonlyArray<DeepInput<U>>>
            : [T] extends [object]
              ? pulumi.Input<DeepInputFields<T>>
              : pulumi.Input<T>;

/** Each member of a union of objects mapped on its own (so variants stay variants). */
type DeepInputFields<T> = T extends object ? { [K in keyof T]: DeepInput<Exclude<T[K], undefined>> } : never;

type IsUnion<T, U = T> = T extends unknown ? ([U] extends [T] ? false : true) : never;
type IsTag<T> = [T] extends [string] ? (string extends T ? false : true extends IsUnion<T> ? false : true) : false;

/** A far host: its ssh:// URL, or the URL with the key files ssh should use. */
export type HostArgs =
    | string
    | {
          /** "ssh://user@host:port" (port 22 when left out). No password: use a key or your ssh agent. */
          url: string;
          /** Absolute path of the private key; default your ssh agent and ~/.ssh/config. */
          identityFile?: string;
          /** Absolute path of a known_hosts file with the host's key; default ~/.ssh/known_hosts. */
          knownHosts?: string;
      };
