-- A sender's pause has one truth, oltp.senders.paused (engine/senders/service.py); shaping's
-- Redis key is a cache filled from it at start, so its persisted copy goes.
ALTER TABLE oltp.shaping_senders DROP COLUMN IF EXISTS paused;
