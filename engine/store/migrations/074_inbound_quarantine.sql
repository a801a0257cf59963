-- Inbound quarantine (issue 15): a message whose parse used up its CPU budget, or crashed the
-- parse worker twice, is marked here and never parsed again automatically; `engine bounce
-- requeue ID` clears the mark. parse_cpu_ms is the CPU the last parse attempt used.
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS quarantined_at timestamptz;
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS quarantine_reason text;
ALTER TABLE content.inbound_messages ADD COLUMN IF NOT EXISTS parse_cpu_ms real;
-- What the listener's sweep reads (in pages): stored, not processed, not quarantined.
CREATE INDEX IF NOT EXISTS inbound_pending ON content.inbound_messages (id)
    WHERE processed_at IS NULL AND quarantined_at IS NULL;
CREATE INDEX IF NOT EXISTS inbound_quarantined ON content.inbound_messages (quarantined_at)
    WHERE quarantined_at IS NOT NULL AND processed_at IS NULL;
