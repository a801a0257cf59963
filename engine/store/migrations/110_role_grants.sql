-- The database roles of migration 096 (docs/security.md, "The database enforces it") reach the
-- tables created after it too: every tenant table is protected by the tenant policies, and
-- engine_worker may use every engine table and sequence. The owner-only tables stay revoked.
-- A later migration that creates a table ends with `SELECT engine.grant_roles();`.
CREATE OR REPLACE FUNCTION engine.grant_roles() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    s text;
BEGIN
    FOR t IN SELECT DISTINCT format('%I.%I', c.table_schema, c.table_name)
               FROM information_schema.columns c
               JOIN information_schema.tables x
                 ON x.table_schema = c.table_schema AND x.table_name = c.table_name
              WHERE c.column_name = 'tenant_id' AND x.table_type = 'BASE TABLE'
                AND c.table_schema IN ('queue', 'content', 'oltp', 'olap')
    LOOP
        PERFORM engine.protect_tenant_table(t::regclass);
    END LOOP;
    FOREACH s IN ARRAY ARRAY['engine', 'queue', 'content', 'oltp', 'olap'] LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I'
                       ' TO engine_worker', s);
        EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I'
                       ' TO engine_worker, engine_api', s);
    END LOOP;
    REVOKE ALL ON engine.secrets, engine.platform_tenants, engine.settings
        FROM engine_worker, engine_api;
END
$$;

SELECT engine.grant_roles();
