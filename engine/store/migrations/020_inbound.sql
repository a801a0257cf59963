-- Inbound messages: what became of each stored bounce/complaint (processed once, even after a
-- crash: rows with processed_at NULL are processed again at start).
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS processed_at timestamptz;
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS job_id bigint;
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS verp_job_id bigint;
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS fbl boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS inbound_unprocessed ON content.inbound_messages (id)
    WHERE processed_at IS NULL;
CREATE INDEX IF NOT EXISTS events_recipient ON oltp.events (tenant_id, recipient, kind, created_at);
