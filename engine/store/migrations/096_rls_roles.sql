-- The database enforces tenant isolation too (docs/security.md, "The database enforces it").
--
-- Roles (NOLOGIN; grant them to login roles):
--   engine_worker   the daemon's cross-tenant send path: every tenant's rows, no DDL.
--   engine_api      tenant-scoped admin requests: the rows of the tenant set by
--                   engine.set_tenant() in the same transaction, nothing without it.
--   engine_platform platform services: engine.enqueue(jsonb) for the tenants
--                   engine.platform_tenants grants them, and no table at all.
--   engine_tenant   (010) read access for a tenant context set by a trusted caller.
--
-- The tenant context is a pair of transaction-local settings: engine.tenant_id and
-- engine.tenant_mac, an HMAC-SHA256 of (tenant, backend pid, transaction start) under a key
-- only the owner can read. engine.current_tenant() returns the tenant only when the MAC
-- verifies, so `SET engine.tenant_id = 'B'` by a caller gives no context at all; only
-- engine.set_tenant(), which only engine_api (and the owner) may EXECUTE, writes a valid pair.
-- Every table with a tenant_id is FORCE ROW LEVEL SECURITY: its owner is held to policies too
-- (engine_all lets the owner and engine_worker see everything; superusers bypass RLS anyway).

DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['engine_worker', 'engine_api', 'engine_platform', 'engine_tenant'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;

CREATE TABLE IF NOT EXISTS engine.secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);
REVOKE ALL ON engine.secrets FROM PUBLIC;
-- 32 bytes from the server's strong random source (gen_random_uuid uses pg_strong_random).
INSERT INTO engine.secrets VALUES (
    'tenant_context',
    substring(uuid_send(gen_random_uuid()) FROM 1 FOR 16)
        || substring(uuid_send(gen_random_uuid()) FROM 1 FOR 16)
) ON CONFLICT DO NOTHING;

-- Which platform roles may enqueue for which tenant (engine tenants grant --role R T).
CREATE TABLE IF NOT EXISTS engine.platform_tenants (
    role_name text NOT NULL,
    tenant_id text NOT NULL REFERENCES oltp.tenants ON DELETE CASCADE,
    PRIMARY KEY (role_name, tenant_id)
);
REVOKE ALL ON engine.platform_tenants FROM PUBLIC;

CREATE OR REPLACE FUNCTION engine.hmac_sha256(key bytea, msg bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT sha256(
        (SELECT string_agg(set_byte('\x00'::bytea, 0, get_byte(k, i) # 92), ''::bytea ORDER BY i)
           FROM generate_series(0, 63) AS i)
        || sha256(
            (SELECT string_agg(set_byte('\x00'::bytea, 0, get_byte(k, i) # 54), ''::bytea
                               ORDER BY i) FROM generate_series(0, 63) AS i)
            || msg))
      FROM (SELECT key || decode(repeat('00', 64 - octet_length(key)), 'hex') AS k) AS padded;
$$;

CREATE OR REPLACE FUNCTION engine.tenant_mac(tid text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, engine AS $$
    SELECT encode(engine.hmac_sha256(
        (SELECT value FROM engine.secrets WHERE name = 'tenant_context'),
        convert_to(tid || '|' || pg_backend_pid() || '|'
                   || extract(epoch FROM transaction_timestamp())::text, 'UTF8')), 'hex');
$$;
REVOKE ALL ON FUNCTION engine.tenant_mac(text) FROM PUBLIC;

-- Trusted code only: sets the tenant of the current transaction.
CREATE OR REPLACE FUNCTION engine.set_tenant(tid text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, engine AS $$
BEGIN
    IF tid IS NULL OR tid = '' THEN
        RAISE EXCEPTION 'engine.set_tenant: a tenant id is required';
    END IF;
    PERFORM set_config('engine.tenant_id', tid, true);
    PERFORM set_config('engine.tenant_mac', engine.tenant_mac(tid), true);
    RETURN tid;
END
$$;
REVOKE ALL ON FUNCTION engine.set_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION engine.set_tenant(text) TO engine_api;

-- The tenant of this transaction, or NULL when none was set by engine.set_tenant().
CREATE OR REPLACE FUNCTION engine.current_tenant() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, engine AS $$
    SELECT t FROM (SELECT nullif(current_setting('engine.tenant_id', true), '') AS t,
                          current_setting('engine.tenant_mac', true) AS m) AS s
     WHERE t IS NOT NULL AND m IS NOT NULL AND m = engine.tenant_mac(t);
$$;
GRANT EXECUTE ON FUNCTION engine.current_tenant() TO PUBLIC;

-- Applies the tenant rules to one table: FORCE RLS, tenant_isolation on the verified context,
-- engine_all for the owner (the role running this) and engine_worker. Later migrations that
-- add a tenant table call it too.
CREATE OR REPLACE FUNCTION engine.protect_tenant_table(t regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    sch text;
    tbl text;
BEGIN
    SELECT n.nspname, c.relname INTO sch, tbl FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
    IF EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = sch AND tablename = tbl
               AND policyname = 'tenant_isolation') THEN
        EXECUTE format('ALTER POLICY tenant_isolation ON %s'
                       ' USING (tenant_id = (SELECT engine.current_tenant()))', t);
    ELSE
        EXECUTE format('CREATE POLICY tenant_isolation ON %s'
                       ' USING (tenant_id = (SELECT engine.current_tenant()))', t);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = sch AND tablename = tbl
                   AND policyname = 'engine_all') THEN
        EXECUTE format('CREATE POLICY engine_all ON %s TO %I, engine_worker'
                       ' USING (true) WITH CHECK (true)', t, current_user);
    END IF;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO engine_worker', t);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO engine_api', t);
END
$$;

DO $$
DECLARE t text;
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
END $$;

-- engine_worker: the rest of the engine's tables (no tenant column) and sequences.
GRANT USAGE ON SCHEMA engine, queue, content, oltp, olap TO engine_worker, engine_api;
-- Policies call engine.current_tenant() as the querying role; platform roles call enqueue.
GRANT USAGE ON SCHEMA engine TO engine_platform, engine_tenant;
DO $$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['engine', 'queue', 'content', 'oltp', 'olap'] LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I'
                       ' TO engine_worker', s);
        EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I'
                       ' TO engine_worker, engine_api', s);
    END LOOP;
END $$;
-- The context key, the platform grants and the enqueue rules are the owner's: engine.enqueue
-- and engine.current_tenant read them with the owner's rights.
REVOKE ALL ON engine.secrets, engine.platform_tenants, engine.settings
    FROM engine_worker, engine_api;
GRANT EXECUTE ON FUNCTION engine.set_tenant(text) TO engine_worker;

-- engine.enqueue checks the tenant of each job against what the calling role may do: a
-- platform role (a direct member of engine_platform) its granted tenants; a verified tenant
-- context its tenant; the owner, superusers and engine_worker any tenant; anyone else none.
-- The invoker-rights wrapper names the calling role (current_user) to the owner-rights
-- function, which accepts only a role the session could SET ROLE to anyway.
ALTER FUNCTION engine.enqueue(jsonb) RENAME TO enqueue_unchecked;
REVOKE ALL ON FUNCTION engine.enqueue_unchecked(jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION engine.enqueue_allowed(caller text) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, engine AS $$
DECLARE
    me oid := (SELECT oid FROM pg_roles WHERE rolname = caller);
    ctx text := engine.current_tenant();
BEGIN
    IF me IS NULL OR NOT pg_has_role(session_user, me, 'MEMBER') THEN
        RAISE EXCEPTION 'engine.enqueue: % is not a role of this session', caller
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                WHERE r.rolname = 'engine_platform' AND m.member = me) THEN
        RETURN ARRAY(SELECT p.tenant_id FROM engine.platform_tenants p
                       JOIN pg_roles r ON r.rolname = p.role_name
                      WHERE r.oid = me OR EXISTS (SELECT 1 FROM pg_auth_members m
                                                   WHERE m.roleid = r.oid AND m.member = me));
    END IF;
    IF ctx IS NOT NULL THEN
        RETURN ARRAY[ctx];
    END IF;
    IF (SELECT rolsuper FROM pg_roles WHERE oid = me)
       OR me = (SELECT relowner FROM pg_class WHERE oid = 'queue.jobs'::regclass)
       OR pg_has_role(me, 'engine_worker', 'MEMBER') THEN
        RETURN NULL;  -- any tenant
    END IF;
    RETURN ARRAY[]::text[];
END
$$;

CREATE OR REPLACE FUNCTION engine.enqueue_as(jobs jsonb, caller text)
RETURNS TABLE (ord integer, job_id bigint, idempotency_key text, error text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, engine AS $$
#variable_conflict use_column
DECLARE
    allowed text[] := engine.enqueue_allowed(caller);
    arr jsonb := CASE jsonb_typeof(jobs) WHEN 'object' THEN jsonb_build_array(jobs) ELSE jobs END;
    ok jsonb := '[]'::jsonb;
    refused jsonb := '[]'::jsonb;
    ords integer[] := '{}';
    j jsonb;
    i integer := 0;
BEGIN
    IF jsonb_typeof(arr) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'engine.enqueue expects a job object or an array of jobs';
    END IF;
    FOR j IN SELECT value FROM jsonb_array_elements(arr) LOOP
        i := i + 1;
        IF allowed IS NULL OR (jsonb_typeof(j) = 'object' AND (j->>'tenant_id') = ANY(allowed))
        THEN
            ok := ok || jsonb_build_array(j);
            ords := ords || i;
        ELSE
            refused := refused || jsonb_build_array(jsonb_build_object(
                'ord', i,
                'key', CASE WHEN jsonb_typeof(j) = 'object' THEN j->>'idempotency_key' END,
                'error', format('tenant %s: database role %s may not enqueue for it',
                                CASE WHEN jsonb_typeof(j) = 'object' THEN j->>'tenant_id' END,
                                caller)));
        END IF;
    END LOOP;
    RETURN QUERY
        SELECT x.o, x.id, x.k, x.e FROM (
            SELECT (r->>'ord')::integer AS o, NULL::bigint AS id, r->>'key' AS k,
                   r->>'error' AS e
              FROM jsonb_array_elements(refused) AS r
            UNION ALL
            SELECT ords[u.ord], u.job_id, u.idempotency_key, u.error
              FROM engine.enqueue_unchecked(ok) AS u
             WHERE jsonb_array_length(ok) > 0
        ) AS x ORDER BY x.o;
END
$$;
GRANT EXECUTE ON FUNCTION engine.enqueue_as(jsonb, text) TO PUBLIC;

CREATE OR REPLACE FUNCTION engine.enqueue(jobs jsonb)
RETURNS TABLE (ord integer, job_id bigint, idempotency_key text, error text)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM engine.enqueue_as(jobs, current_user::text);
$$;
GRANT EXECUTE ON FUNCTION engine.enqueue(jsonb) TO PUBLIC;
