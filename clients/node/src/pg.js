// Enqueue inside the platform's own PostgreSQL transaction: the jobs commit (or roll back)
// together with the platform's rows, and the engine is woken by NOTIFY at commit.

/**
 * Enqueue `jobs` through SQL `engine.enqueue(jsonb)` on `client`, a pg Client or PoolClient
 * that is (usually) inside the caller's BEGIN ... COMMIT. One row per job, in input order:
 * `{ord, job_id, idempotency_key, error}`; a refused job has `error` and no `job_id`, the
 * others still go in.
 *
 * @param {{ query: (text: string, values: unknown[]) => Promise<{ rows: any[] }> }} client
 * @param {object | object[]} jobs
 */
export async function enqueueInTransaction(client, jobs) {
  const list = Array.isArray(jobs) ? jobs : [jobs];
  const { rows } = await client.query(
    "SELECT ord, job_id, idempotency_key, error FROM engine.enqueue($1::jsonb)",
    [JSON.stringify(list)],
  );
  return rows.map((r) => ({
    ord: r.ord,
    job_id: r.job_id === null ? null : Number(r.job_id),
    idempotency_key: r.idempotency_key,
    error: r.error,
  }));
}
