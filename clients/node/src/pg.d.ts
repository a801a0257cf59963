import type { Job } from "./index.js";

export interface SqlEnqueueResult {
  ord: number;
  job_id: number | null;
  idempotency_key: string | null;
  error: string | null;
}

/** The part of pg's Client / PoolClient this needs. */
export interface Queryable {
  query(text: string, values: unknown[]): Promise<{ rows: any[] }>;
}

export declare function enqueueInTransaction(
  client: Queryable,
  jobs: Job | Job[],
): Promise<SqlEnqueueResult[]>;
