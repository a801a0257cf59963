// The client against a real engine: enqueue with idempotency keys, batches, lookup and search,
// suppressions, SQL enqueue in the platform's transaction, Standard Webhooks verification.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import pg from "pg";
import {
  EngineApiError,
  idempotencyKey,
  verifyWebhook,
  WebhookVerificationError,
} from "../src/index.js";
import { enqueueInTransaction } from "../src/pg.js";
import { client, env, eventually, missing, registerWebhook } from "./helpers.js";

const TENANT = process.env.ENGINE_TENANT ?? "nodeclient";
const FROM = `news@${env.domain}`;
const run = Date.now().toString(36); // keys unique per run: the engine may be reused

function job(n, extra = {}) {
  return {
    tenant_id: TENANT,
    idempotency_key: idempotencyKey(run, "job", n),
    from: FROM,
    to: `reader${n}@example.com`,
    subject: `Hello ${n}`,
    text: "Plain body",
    campaign_id: `weekly-${run}`,
    ...extra,
  };
}

describe("engine client", { skip: missing ?? false }, () => {
  const engine = missing ? null : client();

  test("enqueue is idempotent per key and refuses a bad job alone", async () => {
    const first = await engine.enqueue([job(1), job(2), { ...job(3), to: "not an address" }]);
    assert.equal(first.accepted, 2);
    assert.equal(first.rejected, 1);
    assert.match(first.results[2].error, /to/);
    assert.equal(first.results[2].job_id ?? null, null);
    const again = await engine.enqueue([job(1), job(2)]);
    assert.deepEqual(
      again.results.map((r) => r.job_id),
      first.results.slice(0, 2).map((r) => r.job_id),
    );
    assert.ok(first.results.slice(0, 2).every((r) => r.created), "new jobs say so");
    assert.ok(again.results.every((r) => !r.created), "nothing enqueued twice");
  });

  test("enqueueBatches splits a list and numbers results over the whole input", async () => {
    const jobs = [10, 11, 12, 13, 14].map((n) => job(n));
    const res = await engine.enqueueBatches(jobs, { batchSize: 2 });
    assert.equal(res.accepted, 5);
    assert.deepEqual(res.results.map((r) => r.index), [0, 1, 2, 3, 4]);
    assert.deepEqual(
      res.results.map((r) => r.idempotency_key),
      jobs.map((j) => j.idempotency_key),
    );
  });

  test("a job is found by id, and by campaign page after page", async () => {
    const { results } = await engine.enqueue(job(20, { metadata: { user: 20 } }));
    const id = results[0].job_id;
    const detail = await engine.getMessage(id, { tenant: TENANT });
    assert.equal(detail.id, id);
    assert.equal(detail.recipient, "reader20@example.com");
    assert.equal(detail.tenant_id, TENANT);
    const seen = [];
    for await (const m of engine.iterateMessages({ tenant: TENANT, campaign: `weekly-${run}`, limit: 2 })) {
      seen.push(m.id);
    }
    assert.ok(seen.includes(id));
    assert.equal(new Set(seen).size, seen.length, "no job twice across pages");
    assert.ok(seen.length >= 8, `every job of the campaign (${seen.length})`);
    await assert.rejects(engine.getMessage(999_999_999, { tenant: TENANT }), (err) => {
      assert.ok(err instanceof EngineApiError);
      assert.equal(err.status, 404);
      return true;
    });
  });

  test("suppressions: add, list, remove", async () => {
    const address = `gone-${run}@example.com`;
    await engine.addSuppressions({ tenant_id: TENANT, address, reason: "manual" });
    const page = await engine.listSuppressions({ tenant: TENANT, limit: 100 });
    assert.ok(page.suppressions.some((s) => s.address === address), JSON.stringify(page));
    const removed = await engine.removeSuppression({ tenant: TENANT, address });
    assert.equal(removed.removed, true);
    const after = await engine.listSuppressions({ tenant: TENANT, limit: 100 });
    assert.ok(!after.suppressions.some((s) => s.address === address));
  });

  test("enqueue through SQL commits and rolls back with the platform's transaction", { skip: env.dsn ? false : "ENGINE_DSN unset" }, async () => {
    const db = new pg.Client({ connectionString: env.dsn });
    await db.connect();
    try {
      await db.query("BEGIN");
      const rolled = await enqueueInTransaction(db, job(30));
      assert.equal(rolled[0].error, null);
      await db.query("ROLLBACK");
      await db.query("BEGIN");
      const kept = await enqueueInTransaction(db, [job(31), { ...job(32), from: "x@unverified.example" }]);
      await db.query("COMMIT");
      assert.equal(kept[0].error, null);
      assert.match(kept[1].error, /domain/);
      const detail = await engine.getMessage(kept[0].job_id, { tenant: TENANT });
      assert.equal(detail.recipient, "reader31@example.com");
      const rolledBack = await engine.searchMessages({ tenant: TENANT, recipient: "reader30@example.com" });
      assert.equal(rolledBack.messages.length, 0, "the rolled-back job is not queued");
    } finally {
      await db.end();
    }
  });

  describe("webhooks", { skip: process.env.WEBHOOK_PORT ? false : "WEBHOOK_PORT unset" }, () => {
    const hooks = registerWebhook(engine, TENANT, Number(process.env.WEBHOOK_PORT), "/hooks/client");

    test("events arrive standard-signed and carry campaign, key and metadata", async () => {
      const { receiver, hook } = hooks;
      assert.match(hook.secret, /^whsec_/);
      const sent = job(40, { metadata: { order: "A-40" } });
      const { results } = await engine.enqueue(sent);
      const id = results[0].job_id;
      const event = await eventually(
        () => {
          for (const r of receiver.requests) {
            const payload = verifyWebhook(hook.secret, r.body, r.headers);
            const e = payload.events.find((x) => x.job_id === id);
            if (e) return e;
          }
          return null;
        },
        { what: `an event of job ${id}` },
      );
      assert.equal(event.tenant_id, TENANT);
      assert.equal(event.campaign_id, sent.campaign_id);
      assert.equal(event.idempotency_key, sent.idempotency_key);
      assert.deepEqual(event.metadata, { order: "A-40" });
      const r = receiver.requests[0];
      assert.match(r.headers["webhook-signature"], /^v1,/);
      assert.ok(r.headers["x-penguinmails-signature"], "the deprecated header is still sent");
      assert.throws(() => verifyWebhook(hook.secret, Buffer.concat([r.body, Buffer.from(" ")]), r.headers), WebhookVerificationError);
      assert.throws(() => verifyWebhook("whsec_" + Buffer.alloc(32, 7).toString("base64"), r.body, r.headers), WebhookVerificationError);
    });
  });
});
