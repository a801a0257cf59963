// Enqueue mail in the platform's own PostgreSQL transaction: the signup row and its welcome
// mail commit together, or neither does. Run:
//   DATABASE_URL=postgres://... node examples/enqueue-in-transaction.js
// The role needs EXECUTE on engine.enqueue(jsonb) and a grant for the tenant (docs/platform.md).
import pg from "pg";
import { idempotencyKey } from "@penguinmails/engine-client";
import { enqueueInTransaction } from "@penguinmails/engine-client/pg";

const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
await client.connect();
try {
  await client.query("BEGIN");
  // ... the platform's own writes, e.g. INSERT INTO app.users ...
  const email = process.env.SIGNUP_EMAIL ?? "new.user@example.com";
  const results = await enqueueInTransaction(client, {
    tenant_id: process.env.TENANT ?? "acme",
    idempotency_key: idempotencyKey("welcome", email),
    from: process.env.FROM ?? "hello@acme.example",
    to: email,
    subject: "Welcome aboard",
    text: "Thanks for signing up.",
    metadata: { source: "signup" },
  });
  const refused = results.filter((r) => r.error !== null);
  if (refused.length > 0) throw new Error(`enqueue refused: ${refused[0].error}`);
  await client.query("COMMIT"); // the engine is woken by NOTIFY now, not before
  console.log("queued job", results[0].job_id);
} catch (err) {
  await client.query("ROLLBACK");
  throw err;
} finally {
  await client.end();
}
