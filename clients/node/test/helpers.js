// What the Node tests share: the running engine named by the environment (the pytest in
// tests/integration/test_node_client.py starts it and sets these), a webhook receiver, polling.
import { createServer } from "node:http";
import { after, before } from "node:test";
import { EngineClient } from "../src/index.js";

export const env = {
  url: process.env.ENGINE_ADMIN_URL,
  token: process.env.ENGINE_ADMIN_TOKEN,
  dsn: process.env.ENGINE_DSN,
  domain: process.env.ENGINE_SENDER_DOMAIN ?? "acme.example",
};

/** Why the engine tests cannot run here (null when they can). */
export const missing =
  env.url && env.token
    ? null
    : "ENGINE_ADMIN_URL / ENGINE_ADMIN_TOKEN unset: run through `make test` " +
      "(tests/integration/test_node_client.py starts an engine for these tests)";

export function client() {
  return new EngineClient({ baseUrl: env.url, token: env.token });
}

/** Poll `check` until it returns something truthy (returned) or `timeoutMs` passes. */
export async function eventually(check, { timeoutMs = 60_000, everyMs = 200, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * An HTTP server on 127.0.0.1:`port` that records every POST (raw body and headers) and
 * answers 200. The engine is configured to allow this port for webhooks.
 */
export async function webhookReceiver(port) {
  const requests = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      requests.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(200).end("ok");
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  return {
    requests,
    url: (path) => `http://127.0.0.1:${port}${path}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/**
 * In the current suite: a receiver on `port` and a webhook endpoint of `tenant` pointing at it,
 * both removed after the suite. The returned object's `receiver` and `hook` (with the
 * endpoint's `secret`) are set once the suite's tests run.
 */
export function registerWebhook(engine, tenant, port, path) {
  const ctx = { receiver: null, hook: null };
  before(async () => {
    ctx.receiver = await webhookReceiver(port);
    ctx.hook = await engine.createWebhook({ tenant_id: tenant, url: ctx.receiver.url(path) });
  });
  after(async () => {
    if (ctx.hook) await engine.deleteWebhook(ctx.hook.webhook.id, { tenant });
    await ctx.receiver?.close();
  });
  return ctx;
}
