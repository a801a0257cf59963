CREATE SCHEMA IF NOT EXISTS oltp;

-- Audit log of operator actions (engine/audit.py): who did what to which target, append-only.
-- tenant_id '' marks an engine-wide action (a retention run); targets that are personal data
-- (an erased address) are recorded pseudonymised, never in clear.
CREATE TABLE IF NOT EXISTS oltp.audit_log (
    tenant_id  text NOT NULL DEFAULT '',
    id         bigint GENERATED ALWAYS AS IDENTITY,
    actor      text NOT NULL,                 -- operator, token name, "cli:<unix user>", "daemon"
    action     text NOT NULL,                 -- e.g. gdpr.erase, sender.pause, retention.run
    target     text,
    detail     jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS audit_log_created ON oltp.audit_log (created_at);

ALTER TABLE oltp.audit_log ENABLE ROW LEVEL SECURITY;
DO $audit_rls$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'oltp'
                   AND tablename = 'audit_log' AND policyname = 'tenant_isolation') THEN
        CREATE POLICY tenant_isolation ON oltp.audit_log
            USING (tenant_id = current_setting('engine.tenant_id', true));
    END IF;
END
$audit_rls$;
