// Types of the hand-written wrapper (src/index.js). The API's own shapes come from
// schema.d.ts, generated from the committed openapi.json by openapi-typescript (`npm run gen`).
import type { components, paths, webhooks } from "./schema.js";
import { WebhookVerificationError } from "standardwebhooks";

export type { components, paths, webhooks };
type Schemas = components["schemas"];

/** A send job as the platform submits it (POST /v1/messages, SQL engine.enqueue). */
export type Job = Schemas["Job"] & {
  /** Per-recipient template variables of a campaign job (no subject/text/html/raw then). */
  variables?: Record<string, unknown>;
};
export type EnqueueResponse = Schemas["EnqueueResponse"];
export type EnqueueResult = Schemas["EnqueueResult"];
export type MessagePage = Schemas["MessagePage"];
export type MessageView = Schemas["MessageView"];
export type MessageDetail = Schemas["MessageDetail"];
export type MessageQuery = NonNullable<paths["/v1/messages"]["get"]["parameters"]["query"]>;
export type CancelResult = Schemas["CancelResult"];
export type SuppressionIn = Schemas["SuppressionIn"];
export type SuppressionPage = Schemas["SuppressionPage"];
export type SuppressionWritten = Schemas["SuppressionWritten"];
export type SuppressionRemoved = Schemas["SuppressionRemoved"];
/** The body of a webhook POST: a batch of one tenant's events, in commit order. */
export type WebhookPayload = Schemas["WebhookPayload"];
export type WebhookEvent = Schemas["Event"];

/** PUT /v1/campaigns/{campaign_id}: the template (Jinja2 sandbox syntax). */
export interface CampaignTemplate {
  /** Operator token only: a tenant key implies its tenant. */
  tenant_id?: string;
  subject: string;
  text?: string;
  html?: string;
}
export interface CampaignSaved {
  campaign_id: string;
  tenant_id: string;
  version: number;
}
export interface CampaignCounters {
  queued?: number;
  relayed: number;
  delivered: number;
  bounced: number;
  complained: number;
  unsubscribed: number;
  deferred: number;
  failed: number;
}
export interface CampaignStats {
  campaign_id: string;
  tenant_id: string;
  totals: CampaignCounters;
  days: Array<CampaignCounters & { day: string }>;
}

export declare const MAX_BATCH: number;

export declare class EngineApiError extends Error {
  readonly status: number;
  readonly body: unknown;
  constructor(status: number, message: string, body: unknown);
}

export declare function idempotencyKey(...parts: Array<string | number>): string;

export interface EngineClientOptions {
  /** The engine's admin URL, e.g. http://127.0.0.1:8025 */
  baseUrl: string;
  /** The operator's [admin] token or a tenant API key (pm_live_...). */
  token: string;
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export declare class EngineClient {
  constructor(opts: EngineClientOptions);
  readonly baseUrl: string;
  request<T = unknown>(
    method: string,
    path: string,
    opts?: { query?: Record<string, unknown>; body?: unknown },
  ): Promise<T>;
  enqueue(jobs: Job | Job[]): Promise<EnqueueResponse>;
  enqueueBatches(jobs: Job[], opts?: { batchSize?: number }): Promise<EnqueueResponse>;
  getMessage(id: number | string, opts?: { tenant?: string; content?: boolean }): Promise<MessageDetail>;
  searchMessages(query?: MessageQuery): Promise<MessagePage>;
  iterateMessages(query?: MessageQuery): AsyncGenerator<MessageView, void, undefined>;
  cancelMessage(id: number | string, opts?: { tenant?: string }): Promise<CancelResult>;
  listSuppressions(q: { tenant: string; limit?: number; after?: string }): Promise<SuppressionPage>;
  addSuppressions(items: SuppressionIn | SuppressionIn[]): Promise<SuppressionWritten>;
  removeSuppression(q: { tenant: string; address: string }): Promise<SuppressionRemoved>;
  putCampaign(campaignId: string, template: CampaignTemplate): Promise<CampaignSaved>;
  campaignStats(campaignId: string, opts?: { tenant?: string }): Promise<CampaignStats>;
  createWebhook(endpoint: Schemas["WebhookIn"]): Promise<Schemas["WebhookCreated"]>;
  listWebhooks(opts?: { tenant?: string }): Promise<Schemas["WebhookList"]>;
  deleteWebhook(id: number | string, opts?: { tenant?: string }): Promise<Schemas["WebhookRemoved"]>;
  openapi(): Promise<Record<string, any>>;
}

export declare function verifyWebhook(
  secret: string,
  rawBody: string | Buffer | Uint8Array,
  headers: Record<string, string | string[] | undefined> | Headers,
): WebhookPayload;

export { WebhookVerificationError };
