import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ConfigError } from "@coinmesh/lib/config";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthError, createAuthenticator } from "../src/auth.ts";
import { readConfig } from "../src/config.ts";
import { DEV_JWT_SECRET } from "../src/token.ts";
import { TEST_SECRET, token } from "./harness.ts";

const jwtConfig = {
  jwksUrl: undefined,
  secret: TEST_SECRET,
  issuer: "coinmesh-dev",
  audience: "coinmesh",
  clockSkewSeconds: 30,
};
const reasonOf = (promise: Promise<unknown>) =>
  promise.then(
    () => "accepted",
    (err) => (err instanceof AuthError ? err.reason : `unexpected: ${err}`),
  );

describe("HS256 tokens", () => {
  const auth = createAuthenticator(jwtConfig);
  const sub = randomUUID();

  it("yields the subject, lower-cased, and the admin flag", async () => {
    expect(await auth.authenticate(`Bearer ${await token(sub.toUpperCase())}`)).toEqual({
      subject: sub,
      admin: false,
    });
    expect(await auth.authenticate(`bearer ${await token(sub, { admin: true })}`)).toEqual({
      subject: sub,
      admin: true,
    });
  });

  it("treats a missing header as anonymous", async () => {
    expect(await auth.authenticate(undefined)).toBeUndefined();
    expect(await auth.authenticate(null)).toBeUndefined();
  });

  it.each([
    ["expired beyond the skew", () => token(sub, { ttl: -31 }), "expired"],
    ["signed with another secret", () => token(sub, { secret: "x".repeat(40) }), "bad_signature"],
    ["for another audience", () => token(sub, { audience: "other" }), "wrong_audience"],
    ["from another issuer", () => token(sub, { issuer: "other" }), "wrong_issuer"],
    ["for a subject that is not a user id", () => token("alice"), "invalid_claims"],
  ])("refuses a token %s", async (_name, mint, reason) => {
    expect(await reasonOf(auth.authenticate(`Bearer ${await mint()}`))).toBe(reason);
  });

  it("accepts a token expired within the clock skew", async () => {
    expect(await reasonOf(auth.authenticate(`Bearer ${await token(sub, { ttl: -20 })}`))).toBe(
      "accepted",
    );
  });

  it("refuses tokens without exp, with a non-boolean admin, or unsigned", async () => {
    const key = new TextEncoder().encode(TEST_SECRET);
    const base = () =>
      new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(sub)
        .setIssuer("coinmesh-dev")
        .setAudience("coinmesh");
    expect(await reasonOf(auth.authenticate(`Bearer ${await base().sign(key)}`))).toBe(
      "invalid_claims",
    );
    const stringAdmin = await new SignJWT({ admin: "yes" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(sub)
      .setIssuer("coinmesh-dev")
      .setAudience("coinmesh")
      .setExpirationTime("1h")
      .sign(key);
    expect(await reasonOf(auth.authenticate(`Bearer ${stringAdmin}`))).toBe("invalid_claims");
    const payload = (await token(sub)).split(".")[1];
    const none = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${payload}.x`;
    expect(await reasonOf(auth.authenticate(`Bearer ${none}`))).toBe("bad_signature");
  });

  it.each(["Basic abc", "Bearer", "Bearer not-a-jwt", "Token a.b.c"])(
    "refuses the header %j as malformed",
    async (header) => {
      expect(await reasonOf(auth.authenticate(header))).toBe("malformed");
    },
  );

  it("stops accepting a remembered token once it expires", async () => {
    let now = Date.now();
    const clocked = createAuthenticator({ ...jwtConfig, clockSkewSeconds: 0 }, () => now);
    const jwt = await token(sub, { ttl: 60 });
    expect(await reasonOf(clocked.authenticate(`Bearer ${jwt}`))).toBe("accepted");
    now += 61_000;
    expect(await reasonOf(clocked.authenticate(`Bearer ${jwt}`))).toBe("expired");
  });
});

describe("tokens verified against a JWKS", () => {
  let server: Server;
  let url: string;
  let sign: (claims: Record<string, unknown>, kid?: string) => Promise<string>;

  beforeAll(async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" };
    server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
    sign = (claims, kid = "k1") =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "ES256", kid })
        .setIssuer("https://auth.example/")
        .setAudience("coinmesh-api")
        .setExpirationTime("5m")
        .sign(privateKey);
  });

  afterAll(() => {
    server?.close();
  });

  it("accepts the issuer's keys and nothing else", async () => {
    const auth = createAuthenticator({
      ...jwtConfig,
      secret: undefined,
      jwksUrl: url,
      issuer: "https://auth.example/",
      audience: "coinmesh-api",
    });
    const sub = randomUUID();
    expect(await auth.authenticate(`Bearer ${await sign({ sub })}`)).toEqual({
      subject: sub,
      admin: false,
    });
    expect(await reasonOf(auth.authenticate(`Bearer ${await sign({ sub }, "k2")}`))).toBe(
      "bad_signature",
    );
    // An HS256 token made with a guessable secret is no use against a JWKS.
    expect(await reasonOf(auth.authenticate(`Bearer ${await token(sub)}`))).toBe("bad_signature");
  });
});

describe("configuration", () => {
  const problems = (env: Record<string, string>) => {
    try {
      readConfig(env);
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
  };

  it("refuses to start with no JWT settings at all", () => {
    expect(problems({})).toEqual([
      "set JWT_JWKS_URL (production) or JWT_SECRET (development, HS256)",
    ]);
  });

  it("refuses a short HS256 secret, both settings at once, and half a TLS pair", () => {
    expect(problems({ JWT_SECRET: "short" })).toEqual(["JWT_SECRET must be at least 32 bytes"]);
    expect(
      problems({ JWT_SECRET: DEV_JWT_SECRET, JWT_JWKS_URL: "https://auth.example/jwks" }),
    ).toEqual(["set only one of JWT_JWKS_URL and JWT_SECRET"]);
    expect(problems({ JWT_SECRET: DEV_JWT_SECRET, TLS_CERT_FILE: "/c.pem" })).toEqual([
      "set both TLS_CERT_FILE and TLS_KEY_FILE, or neither",
    ]);
  });

  it("reads the documented defaults", () => {
    const config = readConfig({ JWT_SECRET: DEV_JWT_SECRET });
    expect(config).toMatchObject({
      port: 8080,
      metricsPort: 9460,
      backends: { user: "127.0.0.1:50051", order: "127.0.0.1:50052", rate: "127.0.0.1:50053" },
      jwt: { issuer: "coinmesh-dev", audience: "coinmesh", clockSkewSeconds: 30 },
      maxMessageBytes: 1024 * 1024,
      defaultTimeoutMs: 10_000,
      maxTimeoutMs: 30_000,
      maxStreamDurationMs: 3_600_000,
      maxConcurrentStreams: 100,
      maxInFlight: 512,
      corsOrigins: [],
    });
  });

  it("exits at once with the problem when main starts without JWT settings", () => {
    const env = { ...process.env, JWT_SECRET: "", JWT_JWKS_URL: "", LOG_FORMAT: "json" };
    let output = "";
    try {
      execFileSync(process.execPath, ["gateway/src/main.ts"], { env, encoding: "utf8" });
    } catch (err) {
      const failure = err as { status: number; stdout: string };
      expect(failure.status).toBe(1);
      output = failure.stdout;
    }
    expect(output).toContain("JWT_JWKS_URL (production) or JWT_SECRET");
  });
});

it("npm run token mints a token the gateway accepts", async () => {
  const sub = randomUUID();
  const printed = execFileSync(
    process.execPath,
    ["gateway/src/token.ts", "--sub", sub, "--admin", "--ttl", "10m"],
    { env: { ...process.env, JWT_SECRET: TEST_SECRET }, encoding: "utf8" },
  ).trim();
  expect(await createAuthenticator(jwtConfig).authenticate(`Bearer ${printed}`)).toEqual({
    subject: sub,
    admin: true,
  });
  expect(() =>
    execFileSync(process.execPath, ["gateway/src/token.ts"], { stdio: "ignore" }),
  ).toThrow();
});
