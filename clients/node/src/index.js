// The penguinmails-engine admin API client: a thin, typed layer over fetch (Node 20+).
// Plain ESM JavaScript; the types are src/index.d.ts, built on src/schema.d.ts, which
// openapi-typescript generates from the committed openapi.json (`npm run gen`).

import { createHash } from "node:crypto";
import { Webhook, WebhookVerificationError } from "standardwebhooks";

/** The most jobs one POST /v1/messages takes (the engine refuses a larger batch). */
export const MAX_BATCH = 10_000;

/** A non-2xx answer of the engine: `status` and the engine's `{"error": ...}` message. */
export class EngineApiError extends Error {
  constructor(status, message, body) {
    super(`engine answered ${status}: ${message}`);
    this.name = "EngineApiError";
    this.status = status;
    this.body = body;
  }
}

/**
 * A deterministic idempotency key from the parts that identify one send (e.g. campaign id and
 * recipient): the same parts give the same key, so a retried enqueue never sends twice.
 */
export function idempotencyKey(...parts) {
  const h = createHash("sha256");
  for (const p of parts) h.update(String(p)).update("\u0000");
  return h.digest("base64url");
}

export class EngineClient {
  /**
   * @param {{baseUrl: string, token: string, timeoutMs?: number, fetch?: typeof fetch}} opts
   */
  constructor({ baseUrl, token, timeoutMs = 30_000, fetch: fetchImpl = globalThis.fetch }) {
    if (!baseUrl) throw new TypeError("baseUrl is required (the engine's [admin] listen URL)");
    if (!token) throw new TypeError("token is required (the [admin] token or a pm_live_ key)");
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = token;
    this.timeoutMs = timeoutMs;
    this.fetch = fetchImpl;
  }

  /** One request; JSON in and out; throws EngineApiError on a non-2xx answer. */
  async request(method, path, { query, body } = {}) {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    const headers = { authorization: `Bearer ${this.token}`, accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await this.fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const text = await res.text();
    let doc = null;
    if (text) {
      try {
        doc = JSON.parse(text);
      } catch {
        doc = text;
      }
    }
    if (!res.ok) {
      const message = doc && typeof doc === "object" && "error" in doc ? doc.error : text;
      throw new EngineApiError(res.status, message || res.statusText, doc);
    }
    return doc;
  }

  /** Enqueue up to MAX_BATCH jobs in one request; one result per job, in order. */
  enqueue(jobs) {
    const list = Array.isArray(jobs) ? jobs : [jobs];
    if (list.length > MAX_BATCH) {
      throw new RangeError(`at most ${MAX_BATCH} jobs per request; use enqueueBatches()`);
    }
    return this.request("POST", "/v1/messages", { body: list });
  }

  /**
   * Enqueue any number of jobs in requests of `batchSize`; the results of every batch,
   * concatenated, with `index` counted over the whole input. Each job needs an idempotency
   * key, so calling this again after a failure resends nothing that already went in.
   */
  async enqueueBatches(jobs, { batchSize = 1000 } = {}) {
    if (batchSize < 1 || batchSize > MAX_BATCH) {
      throw new RangeError(`batchSize must be between 1 and ${MAX_BATCH}`);
    }
    const out = { accepted: 0, rejected: 0, results: [] };
    for (let start = 0; start < jobs.length; start += batchSize) {
      const page = await this.enqueue(jobs.slice(start, start + batchSize));
      out.accepted += page.accepted;
      out.rejected += page.rejected;
      for (const r of page.results) out.results.push({ ...r, index: r.index + start });
    }
    return out;
  }

  /** One job with its timeline; `content: true` adds the composed message. */
  getMessage(id, { tenant, content } = {}) {
    return this.request("GET", `/v1/messages/${encodeURIComponent(id)}`, {
      query: { tenant, content },
    });
  }

  /** One page of jobs matching every filter given (newest first); pass `next` as `after`. */
  searchMessages(query = {}) {
    return this.request("GET", "/v1/messages", { query });
  }

  /** Every job matching the filters, page after page. */
  async *iterateMessages(query = {}) {
    let after = query.after;
    for (;;) {
      const page = await this.searchMessages({ ...query, after });
      yield* page.messages;
      if (!page.next) return;
      after = page.next;
    }
  }

  /** Cancel a job not yet relayed (409 once relayed or final). */
  cancelMessage(id, { tenant } = {}) {
    return this.request("DELETE", `/v1/messages/${encodeURIComponent(id)}`, {
      query: { tenant },
    });
  }

  /** One page of a tenant's suppressions, by address. */
  listSuppressions({ tenant, limit, after }) {
    return this.request("GET", "/v1/suppressions", { query: { tenant, limit, after } });
  }

  /** Suppress one address or a list (`ttl_s` null: permanent). */
  addSuppressions(items) {
    return this.request("POST", "/v1/suppressions", { body: items });
  }

  /** Remove an address from a tenant's suppression list. */
  removeSuppression({ tenant, address }) {
    return this.request("DELETE", "/v1/suppressions", { query: { tenant, address } });
  }

  /**
   * Create or replace a campaign's template (subject, text and/or HTML, Jinja2 sandbox syntax:
   * `{{ first_name }}`). Jobs with this `campaign_id` and `variables` (and no content of their
   * own) are rendered from it at send time.
   */
  putCampaign(campaignId, template) {
    return this.request("PUT", `/v1/campaigns/${encodeURIComponent(campaignId)}`, {
      body: template,
    });
  }

  /** A campaign's counters from the OLAP tier: totals and one row per day. */
  campaignStats(campaignId, { tenant } = {}) {
    return this.request("GET", `/v1/campaigns/${encodeURIComponent(campaignId)}/stats`, {
      query: { tenant },
    });
  }

  /**
   * Add a webhook endpoint; the answer holds its `whsec_` signing secret (shown only once).
   * `kinds` empty means every event kind.
   */
  createWebhook(endpoint) {
    return this.request("POST", "/v1/webhooks", { body: endpoint });
  }

  /** The webhook endpoints (with their delivery state; never their secrets). */
  listWebhooks({ tenant } = {}) {
    return this.request("GET", "/v1/webhooks", { query: { tenant } });
  }

  /** Remove a webhook endpoint. */
  deleteWebhook(id, { tenant } = {}) {
    return this.request("DELETE", `/v1/webhooks/${encodeURIComponent(id)}`, {
      query: { tenant },
    });
  }

  /** The running engine's OpenAPI document (what this engine version serves). */
  openapi() {
    return this.request("GET", "/openapi.json");
  }
}

/**
 * Verify a webhook POST (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature)
 * and return its parsed payload; throws WebhookVerificationError when the signature does not
 * match, a header is missing or the timestamp is more than 5 minutes off.
 *
 * @param {string} secret the endpoint's `whsec_...` secret (from POST /v1/webhooks)
 * @param {string | Buffer} rawBody the body exactly as received (not re-serialised JSON)
 * @param {Record<string, string | string[] | undefined> | Headers} headers the request headers
 */
export function verifyWebhook(secret, rawBody, headers) {
  const flat = {};
  const entries = headers instanceof Headers ? headers.entries() : Object.entries(headers ?? {});
  for (const [k, v] of entries) flat[k.toLowerCase()] = Array.isArray(v) ? v.join(" ") : v;
  const body = typeof rawBody === "string" ? rawBody : Buffer.from(rawBody).toString("utf8");
  return new Webhook(secret).verify(body, flat);
}

export { WebhookVerificationError };
