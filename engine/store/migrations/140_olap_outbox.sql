-- The olap tier on its own server ([database.olap] dsn, docs/scaling.md "Tiers on separate
-- servers"). The counts of an outcome, an inbound effect or an unsubscribe are then written to
-- queue.olap_outbox in the transaction of what they count, one row per tenant and batch; the
-- drainer (engine/olap_drain.py) applies them to the olap server. Unused when olap shares the
-- [database] server (the counts go straight into olap.* in the same transaction).
-- payload: {"s": [[day, sender, provider, column, n], ...]  (olap.daily_stats)
--           "f": [[day, campaign, sender, provider, outcome, reason, n], ...]  (outcome_facts)
--           "l": [[day, campaign, kind, le_ms, n], ...]}  (latency_histogram)
CREATE TABLE IF NOT EXISTS queue.olap_outbox (
    tenant_id  text NOT NULL,
    id         bigserial,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS olap_outbox_id ON queue.olap_outbox (id);

-- On the olap server: the outbox rows already applied, inserted in the transaction that applies
-- them. A drainer that crashed after that commit but before deleting the rows from the outbox
-- finds them here and applies nothing again. (A single "applied up to id" watermark cannot be
-- used: bigserial ids commit out of order, so a lower id may appear after a higher one was
-- drained.) A row is removed once its outbox row is gone, so the table stays small.
CREATE TABLE IF NOT EXISTS olap.outbox_applied (
    tenant_id  text NOT NULL,
    id         bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

SELECT engine.grant_roles();
