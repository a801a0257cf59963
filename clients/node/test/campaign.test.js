// End to end, the "done when": a templated campaign enqueued through the client, its
// events received standard-signed at a local endpoint and verified with the npm
// standardwebhooks package, its figures read from the OLAP tier. Needs the campaign routes
// (PUT /v1/campaigns/{id}, GET /v1/campaigns/{id}/stats); skipped, saying so, on an engine
// whose /openapi.json does not have them.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { EngineApiError, idempotencyKey, verifyWebhook } from "../src/index.js";
import { client, env, eventually, missing, registerWebhook } from "./helpers.js";

const TENANT = process.env.ENGINE_CAMPAIGN_TENANT ?? "nodecampaign";
const FROM = `news@${process.env.ENGINE_CAMPAIGN_DOMAIN ?? env.domain}`;
const run = Date.now().toString(36);
const CAMPAIGN = `spring-${run}`;
// The test's relay node refuses recipients starting with "bad" (550 5.1.1 at RCPT): the engine
// records that job as failed (a relay refusal; "bounced" is a DSN that arrives later).
const PEOPLE = [
  ["Ada", "ada"],
  ["Grace", "grace"],
  ["Linus", "linus"],
  ["Barbara", "barbara"],
  ["Nobody", "bad-nobody"],
];

async function why() {
  if (missing) return missing;
  if (!process.env.WEBHOOK_CAMPAIGN_PORT) return "WEBHOOK_CAMPAIGN_PORT unset";
  const doc = await client().openapi();
  if (!doc.paths?.["/v1/campaigns/{campaign_id}"] || !doc.paths?.["/v1/campaigns/{campaign_id}/stats"]) {
    return (
      "the running engine has no /v1/campaigns routes in /openapi.json: campaign templates " +
      "and OLAP stats are issue 19 parts 3-4 (another branch); this test passes once both are merged"
    );
  }
  return false;
}

const skip = await why();

describe("templated campaign, standard webhooks, OLAP stats", { skip }, () => {
  const engine = client();
  const hooks = registerWebhook(engine, TENANT, Number(process.env.WEBHOOK_CAMPAIGN_PORT), "/hooks/campaign");

  test("five recipients: four relayed, one refused, all signed, counted per campaign", async () => {
    const saved = await engine.putCampaign(CAMPAIGN, {
      tenant_id: TENANT,
      subject: "Hello {{ first_name }}",
      text: "Hi {{ first_name }}, spring is here.",
      html: "<p>Hi {{ first_name }}, spring is here.</p>",
    });
    assert.equal(saved.campaign_id, CAMPAIGN);
    assert.equal(saved.tenant_id, TENANT);
    assert.ok(saved.version >= 1);

    const jobs = PEOPLE.map(([name, local]) => ({
      tenant_id: TENANT,
      idempotency_key: idempotencyKey(CAMPAIGN, local),
      from: FROM,
      to: `${local}@example.com`,
      campaign_id: CAMPAIGN,
      variables: { first_name: name },
      metadata: { contact: local },
    }));
    const missingVar = {
      ...jobs[0],
      idempotency_key: idempotencyKey(CAMPAIGN, "no-vars"),
      to: "novars@example.com",
      variables: {},
    };
    const res = await engine.enqueue([...jobs, missingVar]);
    assert.equal(res.accepted, 5, JSON.stringify(res.results));
    assert.match(res.results[5].error ?? "", /first_name/, "a missing variable is a per-job error");
    const ids = new Map(res.results.slice(0, 5).map((r, i) => [r.job_id, PEOPLE[i][1]]));

    // Every job reaches a final state, and its webhook event says so, signed.
    const finals = await eventually(
      () => {
        const seen = new Map();
        for (const r of hooks.receiver.requests) {
          for (const e of verifyWebhook(hooks.hook.secret, r.body, r.headers).events) {
            if (ids.has(e.job_id) && (e.kind === "relayed" || e.kind === "failed")) seen.set(e.job_id, e);
          }
        }
        return seen.size === ids.size ? seen : null;
      },
      { timeoutMs: 120_000, what: "a relayed or failed event for each of the 5 jobs" },
    );
    const kinds = [...finals.values()].map((e) => `${e.metadata.contact}:${e.kind}`).sort();
    assert.deepEqual(kinds, [
      "ada:relayed",
      "bad-nobody:failed",
      "barbara:relayed",
      "grace:relayed",
      "linus:relayed",
    ]);
    for (const e of finals.values()) {
      assert.equal(e.campaign_id, CAMPAIGN);
      assert.equal(e.idempotency_key, idempotencyKey(CAMPAIGN, ids.get(e.job_id)));
    }

    // (What the relay received, rendered per recipient, is checked by the pytest that runs this.)
    const [adaId] = [...ids].find(([, local]) => local === "ada");
    const detail = await engine.getMessage(adaId, { tenant: TENANT });
    assert.equal(detail.campaign_id, CAMPAIGN);
    assert.equal(detail.state, "relayed");

    // The OLAP tier counts the campaign's outcomes.
    const stats = await eventually(
      async () => {
        try {
          const s = await engine.campaignStats(CAMPAIGN, { tenant: TENANT });
          return s.totals.relayed >= 4 && s.totals.failed >= 1 ? s : null;
        } catch (err) {
          if (err instanceof EngineApiError && err.status === 404) return null; // not rolled up yet
          throw err;
        }
      },
      { timeoutMs: 120_000, what: "the campaign's OLAP figures" },
    );
    assert.equal(stats.campaign_id, CAMPAIGN);
    assert.equal(stats.totals.relayed, 4);
    assert.equal(stats.totals.failed, 1);
    assert.equal(stats.totals.bounced, 0);
    assert.equal(stats.totals.complained, 0);
    const today = new Date().toISOString().slice(0, 10);
    assert.ok(stats.days.some((d) => d.day === today && d.relayed === 4), JSON.stringify(stats.days));
  });
});
