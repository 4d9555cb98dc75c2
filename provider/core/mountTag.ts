import { sha1 } from "@noble/hashes/legacy";
import { utf8ToBytes } from "@noble/hashes/utils";
import { base32Lower } from "./base32";

/** QEMU refuses 9p mount tags longer than this many bytes. */
export const MAX_MOUNT_TAG_BYTES = 31;

/**
 * The 9p mount tag Guix derives for a shared host directory: "TAG" and the base32 of the
 * SHA-1 of the path with its first four characters dropped. That fills QEMU's 31-byte limit
 * exactly, is plain ASCII without "/" and never starts with "_", so any path gets a legal tag.
 */
export function mountTag(hostPath: string): string {
    return "TAG" + base32Lower(sha1(utf8ToBytes(hostPath))).slice(4);
}
