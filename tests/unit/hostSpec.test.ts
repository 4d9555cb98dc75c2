import { parseHost, placementOf } from "../../provider/core/hostSpec";
import { InputError } from "../../provider/core/validation";
import { explainSshFailure } from "../../provider/host/ssh/sshConnection";
import { parseProviderConfig } from "../../provider/plugin/providerConfig";
import { nodeIsRecentEnough } from "../../provider/host/ssh/runnerClient";

function problems(value: unknown): string[] {
    try {
        parseHost(value);
    } catch (err) {
        if (err instanceof InputError) return err.problems.map((p) => `${p.property}: ${p.reason}`);
        throw err;
    }
    throw new Error(`accepted ${JSON.stringify(value)}`);
}

test("no host is this machine", () => {
    expect(parseHost(undefined)).toBeUndefined();
    expect(parseHost(null)).toBeUndefined();
    expect(placementOf(undefined)).toBeUndefined();
});

test("URLs are normalised: port written, host name lower-cased; files kept beside", () => {
    expect(parseHost("ssh://lab@Lab-2.Example.com")).toEqual({
        url: "ssh://lab@lab-2.example.com:22",
        user: "lab",
        hostname: "lab-2.example.com",
        port: 22,
    });
    expect(parseHost("ssh://10.0.0.7:2222/")).toEqual({ url: "ssh://10.0.0.7:2222", hostname: "10.0.0.7", port: 2222 });
    expect(parseHost("ssh://u@[::1]:22")).toMatchObject({ url: "ssh://u@[::1]:22", hostname: "::1" });
    expect(parseHost({ url: "ssh://lab@h", identityFile: "/k", knownHosts: "/kh" })).toEqual({
        url: "ssh://lab@h:22",
        user: "lab",
        hostname: "h",
        port: 22,
        identityFile: "/k",
        knownHosts: "/kh",
    });
    // The same place however it is written: a diff between them is no move.
    expect(placementOf("ssh://lab@H:22")).toBe(placementOf({ url: "ssh://lab@h" }));
});

test("bad host values are refused naming the field and the fix", () => {
    expect(problems("")).toEqual([expect.stringMatching(/^host: must not be empty; leave host out/)]);
    expect(problems("lab@host")).toEqual([
        expect.stringMatching(/^host: must be an ssh:\/\/ URL; write it as "ssh:\/\/user@host:port"/),
    ]);
    expect(problems("qemu+ssh://lab@host/system")).toEqual([expect.stringContaining("must be an ssh:// URL")]);
    expect(problems("ssh://lab@host/system")).toEqual([
        expect.stringContaining('must not have a path, query or fragment (found "/system")'),
    ]);
    expect(problems("ssh://lab:hunter2@host")).toEqual([expect.stringContaining("must not hold a password")]);
    expect(problems("ssh://lab:hunter2@host").join()).not.toContain("hunter2");
    expect(problems("ssh://-oProxyCommand=x@host")).toEqual([expect.stringContaining("invalid user name")]);
    expect(problems("ssh://-oProxyCommand=evil")).toEqual([expect.stringContaining("invalid host name")]);
    expect(problems("ssh://host:0")).toEqual([expect.stringContaining("invalid port")]);
    expect(problems("ssh://host:70000")).toEqual([expect.stringContaining("invalid port")]);
    expect(problems(42)).toEqual([
        expect.stringContaining("host must be an ssh:// URL string or { url, identityFile?, knownHosts? }"),
    ]);
    expect(problems({ url: "ssh://h", identityFile: "key" })).toEqual([
        'host.identityFile: identityFile must be an absolute path (start with "/")',
    ]);
    expect(problems({ url: "ssh://h", knownHosts: "/home/me/trusted hosts" })).toEqual([
        expect.stringMatching(/^host.knownHosts: knownHosts must not contain whitespace, %, \$/),
    ]);
    expect(problems({ url: "ssh://h", identityFile: "/keys/%h" })).toEqual([
        expect.stringContaining("identityFile must not contain whitespace, %"),
    ]);
    expect(problems({ url: "ssh://h", password: "x" })).toEqual([expect.stringMatching(/^host: .*password|^host: /)]);
});

test("provider configuration: host with its files; files without a host, unknown keys and bad URLs refused", () => {
    expect(parseProviderConfig({})).toEqual({});
    expect(parseProviderConfig({ version: "0.2.0" })).toEqual({});
    expect(parseProviderConfig({ host: "ssh://lab@h:2222", identityFile: "/id", knownHosts: "/kh" }).host).toEqual({
        url: "ssh://lab@h:2222",
        user: "lab",
        hostname: "h",
        port: 2222,
        identityFile: "/id",
        knownHosts: "/kh",
    });
    const refused = (c: Record<string, unknown>) => {
        try {
            parseProviderConfig(c);
        } catch (err) {
            return (err as InputError).problems;
        }
        throw new Error("accepted");
    };
    expect(refused({ identityFile: "/id" })).toEqual([
        { property: "identityFile", reason: expect.stringContaining("only means something with host set") },
    ]);
    expect(refused({ hots: "ssh://h" })).toEqual([{ property: "hots", reason: expect.stringContaining("host") }]);
    expect(refused({ host: "h" })).toEqual([
        { property: "host", reason: expect.stringContaining("must be an ssh:// URL") },
    ]);
});

test("ssh's failures become what to do, naming the host", () => {
    const spec = parseHost("ssh://lab@h:2222")!;
    const unknownKey = explainSshFailure(
        spec,
        "No ED25519 host key is known for [h]:2222 and you have requested strict checking.\nHost key verification failed.",
        255,
    );
    expect(unknownKey.message).toMatch(
        /host ssh:\/\/lab@h:2222: its host key is not known .*ssh-keyscan -p 2222 h >> ~\/.ssh\/known_hosts/,
    );
    const changed = explainSshFailure(
        spec,
        "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.",
        255,
    );
    expect(changed.message).toMatch(/CHANGED.*ssh-keygen -R '\[h\]:2222'/);
    expect(explainSshFailure(spec, "lab@h: Permission denied (publickey).", 255).message).toMatch(
        /authentication failed .*set host.identityFile or load a key/,
    );
    const refused = explainSshFailure(spec, "ssh: connect to host h port 2222: Connection refused", 255);
    expect(refused.name).toBe("HostUnreachableError");
    expect(refused.message).toBe(
        "host ssh://lab@h:2222 is unreachable: ssh: connect to host h port 2222: Connection refused",
    );
});

test("the far host's node must be 18.15 or later (what the runner bundle uses)", () => {
    expect(["v18.15.0", "v18.19.1", "v20.20.2", "v22.1.0"].map(nodeIsRecentEnough)).toEqual([true, true, true, true]);
    expect(["v18.14.2", "v16.20.0", "v12.22.9", "", "18.19.0"].map(nodeIsRecentEnough)).toEqual([
        false,
        false,
        false,
        false,
        false,
    ]);
});
