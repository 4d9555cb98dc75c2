const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

/**
 * RFC 4648 base32 in lowercase without padding, most significant bits first. This is the
 * encoding Guix's `bytevector->base32-string` produces — not Nix's base32, which reverses the
 * bit order and uses another alphabet — so mount tags come out identical to Guix's.
 */
export function base32Lower(bytes: Uint8Array): string {
    let out = "";
    let buffer = 0;
    let bits = 0;
    for (const byte of bytes) {
        buffer = ((buffer << 8) | byte) & 0xffff;
        bits += 8;
        while (bits >= 5) {
            out += ALPHABET[(buffer >>> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31];
    return out;
}
