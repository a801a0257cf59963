CREATE SCHEMA IF NOT EXISTS oltp;

-- Per-tenant API keys for the admin side-port (engine/keys/). The key itself is never stored:
-- `prefix` is its public, random identifier (shown in listings, used to revoke), `hash` the keyed
-- SHA-256 of the whole key (docs/security.md, "API keys and scopes" says why a fast hash is
-- right for a 256-bit random secret). A revoked key keeps its row for the audit trail.
CREATE TABLE IF NOT EXISTS oltp.api_keys (
    prefix       text PRIMARY KEY CHECK (prefix ~ '^[0-9a-f]{12}$'),
    tenant_id    text NOT NULL REFERENCES oltp.tenants (tenant_id),
    scope        text NOT NULL CHECK (scope IN ('send', 'read', 'manage')),
    hash         bytea NOT NULL CHECK (length(hash) = 32),
    name         text NOT NULL DEFAULT '',
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    replaced_by  text                         -- the key that rotated this one out, if any
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON oltp.api_keys (tenant_id, created_at);

ALTER TABLE oltp.api_keys ENABLE ROW LEVEL SECURITY;
DO $keys_rls$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'oltp'
                   AND tablename = 'api_keys' AND policyname = 'tenant_isolation') THEN
        CREATE POLICY tenant_isolation ON oltp.api_keys
            USING (tenant_id = current_setting('engine.tenant_id', true));
    END IF;
END
$keys_rls$;
-- Tenant-scoped readers see their keys' metadata, never the hashes.
REVOKE ALL ON oltp.api_keys FROM engine_tenant;
GRANT SELECT (prefix, tenant_id, scope, name, created_by, created_at, last_used_at, revoked_at,
              replaced_by) ON oltp.api_keys TO engine_tenant;
