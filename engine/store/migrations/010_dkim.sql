CREATE SCHEMA IF NOT EXISTS oltp;

-- DKIM keys kept in the oltp tier (engine/dkim/store.py). private_key_enc is AES-256-GCM
-- ciphertext (engine/dkim/crypto_box.py) bound to (tenant_id, domain, selector); the master key
-- never reaches the database. Rotation by selector: a new key is 'pending' until its DNS TXT
-- record checks out, then 'active'; the previous key is 'retired' only once the new one is active.
CREATE TABLE IF NOT EXISTS oltp.dkim_keys (
    tenant_id       text NOT NULL,
    domain          text NOT NULL,            -- lower-case, IDNA A-label form (d=)
    selector        text NOT NULL,            -- s=
    algorithm       text NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key_enc bytea NOT NULL,
    public_txt      text NOT NULL,            -- value of the TXT record at selector._domainkey.domain
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'active', 'retired')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    activated_at    timestamptz,
    retired_at      timestamptz,
    PRIMARY KEY (tenant_id, domain, selector),
    CHECK (state = 'pending' OR activated_at IS NOT NULL OR state = 'retired'),
    CHECK (state <> 'retired' OR retired_at IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS dkim_keys_active ON oltp.dkim_keys (tenant_id, domain)
    WHERE state = 'active';

ALTER TABLE oltp.dkim_keys ENABLE ROW LEVEL SECURITY;
DO $dkim_rls$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'oltp'
                   AND tablename = 'dkim_keys' AND policyname = 'tenant_isolation') THEN
        CREATE POLICY tenant_isolation ON oltp.dkim_keys
            USING (tenant_id = current_setting('engine.tenant_id', true));
    END IF;
END
$dkim_rls$;

-- Tenant-scoped readers (SET ROLE engine_tenant) may see their keys' public side, never the
-- ciphertext: column-level grant without private_key_enc.
DO $dkim_role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'engine_tenant') THEN
        CREATE ROLE engine_tenant NOLOGIN;
    END IF;
END
$dkim_role$;
GRANT USAGE ON SCHEMA oltp TO engine_tenant;
REVOKE ALL ON oltp.dkim_keys FROM engine_tenant;
GRANT SELECT (tenant_id, domain, selector, algorithm, public_txt, state, created_at,
              activated_at, retired_at) ON oltp.dkim_keys TO engine_tenant;
