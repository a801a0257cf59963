-- The OLAP tier for analysts (issue 19 part 4, docs/analytics.md).
--
-- olap.outcome_facts: counts per send day x tenant x campaign x sender x provider x outcome x
-- reason. `day` is the UTC day the message was relayed (a bounce or complaint arriving later
-- counts on the day its message was sent; deferrals and failures before any relay count on the
-- day of the attempt). `campaign_id`, `provider` and `reason` are '' when there is none.
-- outcome: relayed | deferred | failed | delivered | bounced (hard) | soft_bounced | complained
-- | unsubscribed. reason: the bounce reason class (docs/bounces.md) for bounces, the feedback
-- type for complaints. olap.daily_stats stays as it is (dashboards and tests read it).
CREATE TABLE IF NOT EXISTS olap.outcome_facts (
    tenant_id   text NOT NULL,
    day         date NOT NULL,
    campaign_id text NOT NULL DEFAULT '',
    sender      text NOT NULL DEFAULT '',
    provider    text NOT NULL DEFAULT '',
    outcome     text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    n           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, campaign_id, sender, provider, outcome, reason)
);
CREATE INDEX IF NOT EXISTS outcome_facts_campaign
    ON olap.outcome_facts (tenant_id, campaign_id, day);

-- Latency distributions per day x tenant x campaign: kind 'relay' (enqueue to relayed, counted
-- on the relay day) and 'delivery' (enqueue to the provider's success notice, on the send day).
-- le_ms is the bucket's upper bound in milliseconds (the last bucket is 2^31-1, "more").
CREATE TABLE IF NOT EXISTS olap.latency_histogram (
    tenant_id   text NOT NULL,
    day         date NOT NULL,
    campaign_id text NOT NULL DEFAULT '',
    kind        text NOT NULL,
    le_ms       integer NOT NULL,
    n           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, campaign_id, kind, le_ms)
);

-- What the send path knows and the inbound path needs: the job's provider (the MX rollup the
-- shaper used) and when it was first relayed (the send day bounces are attributed to).
ALTER TABLE queue.jobs ADD COLUMN IF NOT EXISTS provider text;
ALTER TABLE queue.jobs ADD COLUMN IF NOT EXISTS relayed_at timestamptz;

-- The parsed details of a bounce, stored with its raw message (the event log is purged after
-- [retention] events_days; these stay as long as the raw message).
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS dsn_status text;
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS dsn_diagnostic text;
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS remote_mta text;
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS reason text;

SELECT engine.grant_roles();
