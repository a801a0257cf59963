-- oltp.events_horizon() in PL/pgSQL, same body and result as migration 050's SQL function.
-- The SQL function could not be inlined (it has sub-selects), so every call parsed and planned
-- its body again, pg_stat_activity's view included: ~0.9 ms of the server per call, and every
-- read of the event log calls it (the stream publisher every round, ten a second even when
-- idle; the webhook worker's scan and each endpoint's batch). PL/pgSQL keeps the plan for the
-- session: ~0.05 ms per call. STABLE as before, so it sees the calling statement's snapshot.
CREATE OR REPLACE FUNCTION oltp.events_horizon() RETURNS xid8
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN coalesce(
        (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
          WHERE NOT EXISTS (
              SELECT 1 FROM pg_stat_activity a
               WHERE a.datid IS NOT NULL
                 AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND a.backend_xid = ((x::text::numeric % 4294967296)::text)::xid)),
        pg_snapshot_xmax(pg_current_snapshot()));
END
$fn$;
