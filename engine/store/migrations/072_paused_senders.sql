-- Every daemon reads the paused senders every few seconds (PausedSenders, engine/dispatch): a
-- sequential scan of oltp.senders, 7.8 ms at 100,000 senders (10,000 tenants) and growing with
-- them. Paused senders are few: a partial index answers in 0.24 ms.
CREATE INDEX IF NOT EXISTS senders_paused ON oltp.senders (tenant_id) WHERE paused;
