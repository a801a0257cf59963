CREATE SCHEMA IF NOT EXISTS oltp;

-- Sender compliance (engine/compliance, docs/compliance.md): the last check of each sender
-- domain of a tenant, what was done about it, and the rate ceiling shaping applies when the
-- verdict is "throttle". One row per (tenant, domain): every address of the domain shares it.
CREATE TABLE IF NOT EXISTS oltp.sender_compliance (
    tenant_id          text NOT NULL,
    domain             text NOT NULL,              -- lower-case sender domain
    status             text NOT NULL CHECK (status IN ('pass', 'warn', 'fail', 'error')),
    action             text NOT NULL DEFAULT 'none'
                       CHECK (action IN ('none', 'warn', 'throttle', 'block')),
    reasons            text[] NOT NULL DEFAULT '{}',  -- one line per failed check
    report             jsonb NOT NULL,                -- the ComplianceReport
    rate_ceiling_per_s double precision,              -- set while action = 'throttle'
    checked_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, domain)
);
CREATE INDEX IF NOT EXISTS sender_compliance_checked ON oltp.sender_compliance (checked_at);

ALTER TABLE oltp.sender_compliance ENABLE ROW LEVEL SECURITY;
DO $compliance_rls$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'oltp'
                   AND tablename = 'sender_compliance' AND policyname = 'tenant_isolation') THEN
        CREATE POLICY tenant_isolation ON oltp.sender_compliance
            USING (tenant_id = current_setting('engine.tenant_id', true));
    END IF;
END
$compliance_rls$;
