-- Core tiers: queue, content, oltp, olap (DESIGN §2). Every tenant table has tenant_id leading its
-- primary key (so it can be distributed by tenant) and row-level security; the engine role owns
-- the tables and so bypasses RLS, tenant roles see only rows of current_setting('engine.tenant_id').
CREATE SCHEMA IF NOT EXISTS queue;
CREATE SCHEMA IF NOT EXISTS content;
CREATE SCHEMA IF NOT EXISTS oltp;
CREATE SCHEMA IF NOT EXISTS olap;
CREATE SCHEMA IF NOT EXISTS engine;

CREATE TABLE IF NOT EXISTS oltp.tenants (
    tenant_id   text PRIMARY KEY,
    name        text,
    daily_quota bigint,                       -- NULL: no quota
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS oltp.senders (
    tenant_id         text NOT NULL REFERENCES oltp.tenants ON DELETE CASCADE,
    address           text NOT NULL,          -- lower-cased From address
    domain            text NOT NULL,
    paused            boolean NOT NULL DEFAULT false,
    paused_reason     text,
    warmup_stage      integer NOT NULL DEFAULT 0,
    warmup_started_at timestamptz NOT NULL DEFAULT now(),
    reputation        jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, address)
);

CREATE TABLE IF NOT EXISTS oltp.suppressions (
    tenant_id  text NOT NULL,
    address    text NOT NULL,                 -- lower-cased
    reason     text NOT NULL,
    source     text NOT NULL,                 -- bounce | complaint | unsubscribe | operator | gdpr
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,                   -- NULL: permanent
    PRIMARY KEY (tenant_id, address)
);

CREATE TABLE IF NOT EXISTS oltp.events (
    tenant_id  text NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    job_id     bigint,
    kind       text NOT NULL,
    recipient  text,
    message_id text,
    reason     text,
    reply      text,
    data       jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS events_created ON oltp.events (created_at);

-- Content tier: one row per distinct content (a campaign's body is stored once per tenant).
CREATE TABLE IF NOT EXISTS content.email_content (
    tenant_id  text NOT NULL,
    sha256     bytea NOT NULL,
    codec      text NOT NULL,                 -- 'zlib-msgpack' (engine client) | 'json' (SQL enqueue)
    body       bytea NOT NULL,
    size       integer NOT NULL,              -- uncompressed bytes
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256)
);

CREATE TABLE IF NOT EXISTS content.email_messages (
    tenant_id  text NOT NULL,
    sha256     bytea NOT NULL,                -- the email_content row this describes
    from_addr  text,
    subject    text,
    headers    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256)
);

CREATE TABLE IF NOT EXISTS content.attachments (
    tenant_id  text NOT NULL,
    sha256     bytea NOT NULL,
    data       bytea NOT NULL,                -- zlib-compressed
    size       integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256)
);

CREATE TABLE IF NOT EXISTS content.inbound_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text,                          -- NULL until the bounce is mapped to a job
    received_at timestamptz NOT NULL DEFAULT now(),
    peer        text,
    mail_from   text,
    rcpt_to     text[],
    kind        text,
    size        integer NOT NULL,
    raw         bytea NOT NULL                 -- zlib-compressed
);
CREATE INDEX IF NOT EXISTS inbound_received ON content.inbound_messages (received_at);

-- Queue tier: one row per recipient message; the truth for "was this sent?".
CREATE TABLE IF NOT EXISTS queue.jobs (
    tenant_id       text NOT NULL,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    idempotency_key text NOT NULL,
    priority        smallint NOT NULL DEFAULT 1,        -- 0 high, 1 normal, 2 low
    state           text NOT NULL DEFAULT 'queued',
    attempts        integer NOT NULL DEFAULT 0,
    sender          text NOT NULL,
    recipient       text NOT NULL,
    content_sha256  bytea NOT NULL,
    campaign_id     text,
    message_id      text,
    metadata        jsonb,
    send_at         timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    pushed_at       timestamptz,                         -- when the feeder put it on a stream
    lease_owner     text,
    lease_until     timestamptz,
    relay_node      text,
    last_code       integer,
    last_status     text,
    last_reply      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    CONSTRAINT jobs_state_valid CHECK (state IN ('queued','deferred','sending','relayed','bounced',
        'failed','suppressed','cancelled','complained'))
);
CREATE INDEX IF NOT EXISTS jobs_id ON queue.jobs (id);
CREATE INDEX IF NOT EXISTS jobs_due ON queue.jobs (priority, next_attempt_at)
    WHERE state IN ('queued', 'deferred') AND pushed_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_pushed ON queue.jobs (pushed_at)
    WHERE state IN ('queued', 'deferred') AND pushed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_leased ON queue.jobs (lease_until) WHERE state = 'sending';
CREATE INDEX IF NOT EXISTS jobs_recipient ON queue.jobs (tenant_id, recipient);
CREATE INDEX IF NOT EXISTS jobs_message_id ON queue.jobs (message_id) WHERE message_id IS NOT NULL;

-- OLAP tier: daily aggregates, updated in batched upserts, never per message.
CREATE TABLE IF NOT EXISTS olap.daily_stats (
    tenant_id    text NOT NULL,
    day          date NOT NULL,
    sender       text NOT NULL DEFAULT '',
    provider     text NOT NULL DEFAULT '',
    sent         bigint NOT NULL DEFAULT 0,
    relayed      bigint NOT NULL DEFAULT 0,
    deferred     bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    bounced_hard bigint NOT NULL DEFAULT 0,
    bounced_soft bigint NOT NULL DEFAULT 0,
    complained   bigint NOT NULL DEFAULT 0,
    unsubscribed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, sender, provider)
);

-- Row-level security on every tenant table.
DO $rls$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['oltp.tenants','oltp.senders','oltp.suppressions','oltp.events',
        'content.email_content','content.email_messages','content.attachments',
        'content.inbound_messages','queue.jobs','olap.daily_stats']
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        IF NOT EXISTS (SELECT 1 FROM pg_policies
                       WHERE schemaname || '.' || tablename = t AND policyname = 'tenant_isolation')
        THEN
            EXECUTE format('CREATE POLICY tenant_isolation ON %s USING '
                           '(tenant_id = current_setting(''engine.tenant_id'', true))', t);
        END IF;
    END LOOP;
END
$rls$;

-- A role platform services can SET ROLE to (with engine.tenant_id set) for tenant-scoped reads.
DO $role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'engine_tenant') THEN
        CREATE ROLE engine_tenant NOLOGIN;
    END IF;
END
$role$;
GRANT USAGE ON SCHEMA queue, content, oltp, olap TO engine_tenant;
GRANT SELECT ON ALL TABLES IN SCHEMA queue, content, oltp, olap TO engine_tenant;
GRANT UPDATE (state, finished_at, updated_at) ON queue.jobs TO engine_tenant;
GRANT INSERT, DELETE ON oltp.suppressions TO engine_tenant;
