CREATE SCHEMA IF NOT EXISTS oltp;

-- Shaping state that must survive a restart or a Redis flush (engine/shaping/persistence.py).
-- Redis holds the live values shared by every daemon instance; these tables are written
-- periodically in batches and read back at start into keys Redis does not have.

-- AIMD-adapted rate per sender x receiving provider (msg/s, below the provider's ceiling).
CREATE TABLE IF NOT EXISTS oltp.shaping_rates (
    tenant_id    text NOT NULL,
    sender       text NOT NULL,                -- lower-cased From address
    provider     text NOT NULL,                -- provider name (gmail, outlook, example.com, ...)
    rate_per_s   double precision NOT NULL,
    decreased_at timestamptz,                  -- last multiplicative decrease
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sender, provider)
);

-- Warm-up stage and pause of a sender, as shaping sees them.
CREATE TABLE IF NOT EXISTS oltp.shaping_senders (
    tenant_id    text NOT NULL,
    sender       text NOT NULL,
    warmup_stage integer,                      -- NULL: not in the plan (exempt or never sent)
    warmup_day   integer,                      -- UTC days since 1970-01-01 of the last evaluation
    warmup_cap   integer,                      -- daily cap per provider at that stage, -1: none
    paused       jsonb,                        -- NULL: not paused; else the PauseVerdict
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sender)
);

-- Per-tenant overrides: send rate ceiling and fair-share weight (DRR) for the tenant level.
CREATE TABLE IF NOT EXISTS oltp.shaping_tenant_quotas (
    tenant_id  text NOT NULL,
    rate_per_s double precision,               -- NULL: [shaping] tenant_rate_per_s; 0: no limit
    weight     double precision NOT NULL DEFAULT 1.0 CHECK (weight > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);

DO $shaping_rls$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['shaping_rates', 'shaping_senders', 'shaping_tenant_quotas']
    LOOP
        EXECUTE format('ALTER TABLE oltp.%I ENABLE ROW LEVEL SECURITY', t);
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'oltp'
                       AND tablename = t AND policyname = 'tenant_isolation') THEN
            EXECUTE format('CREATE POLICY tenant_isolation ON oltp.%I '
                           'USING (tenant_id = current_setting(''engine.tenant_id'', true))', t);
        END IF;
    END LOOP;
END
$shaping_rls$;
