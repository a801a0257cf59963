-- Sending domains belong to tenants (docs/security.md, "Sending domains"). A tenant registers a
-- domain and proves it (a TXT record _penguinmails.DOMAIN "pm-verify=<token>") or the operator
-- vouches for it; a domain is verified for one tenant at most, and covers its subdomains.
CREATE TABLE IF NOT EXISTS oltp.sending_domains (
    tenant_id   text NOT NULL REFERENCES oltp.tenants ON DELETE CASCADE,
    domain      text NOT NULL CHECK (domain = lower(domain) AND domain !~ '[\s@]'),
    token       text NOT NULL,
    verified_at timestamptz,
    verified_by text CHECK (verified_by IN ('dns', 'dkim', 'operator')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, domain)
);
CREATE UNIQUE INDEX IF NOT EXISTS sending_domains_one_owner
    ON oltp.sending_domains (domain) WHERE verified_at IS NOT NULL;

ALTER TABLE oltp.sending_domains ENABLE ROW LEVEL SECURITY;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'oltp'
                   AND tablename = 'sending_domains' AND policyname = 'tenant_isolation') THEN
        CREATE POLICY tenant_isolation ON oltp.sending_domains
            USING (tenant_id = current_setting('engine.tenant_id', true));
    END IF;
END $$;

-- Enqueue rules the SQL path reads; engine migrate and the daemon write them from [security]
-- (enforcement starts off here so that a bare migration never stops an existing install).
INSERT INTO engine.settings VALUES ('enforce_sender_domains', 'false'),
                                   ('raw_trace_headers', 'refuse')
    ON CONFLICT DO NOTHING;

-- Why tenant tid may not send as address addr (NULL: it may). The verified domain with the
-- longest match (the domain itself or a parent) decides; with none, enforcement refuses, and
-- without enforcement a tenant that registered no domain at all sends as before.
CREATE OR REPLACE FUNCTION engine.sender_domain_error(tid text, addr text, what text)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    d text := lower(split_part(addr, '@', 2));
    labels text[] := string_to_array(d, '.');
    -- d and its parents (never a bare TLD), so the partial unique index on domain answers
    candidates text[] := ARRAY(SELECT array_to_string(labels[i:], '.')
                                 FROM generate_series(1, greatest(cardinality(labels) - 1, 1)) AS i);
    owner text;
    enforce boolean := coalesce((SELECT value = 'true' FROM engine.settings
                                  WHERE key = 'enforce_sender_domains'), true);
BEGIN
    SELECT s.tenant_id INTO owner FROM oltp.sending_domains s
     WHERE s.verified_at IS NOT NULL AND s.domain = ANY(candidates)
     ORDER BY length(s.domain) DESC LIMIT 1;
    IF owner = tid THEN
        RETURN NULL;
    END IF;
    IF owner IS NOT NULL THEN
        RETURN format('%s: domain %s belongs to another tenant; tenant %s may not send as it',
                      what, d, tid);
    END IF;
    IF NOT enforce AND NOT EXISTS (SELECT 1 FROM oltp.sending_domains s WHERE s.tenant_id = tid)
    THEN
        RETURN NULL;
    END IF;
    RETURN format('%s: %s is not a verified sending domain of tenant %s'
                  ' (register it: engine domains add --tenant %s %s)', what, d, tid, tid, d);
END
$$;

-- Why tenant tid may not send a raw message's From / Sender identities (NULL: it may). The
-- Python path also requires the raw From to equal the job's from; here each address in those
-- fields is held to the tenant's domains.
CREATE OR REPLACE FUNCTION engine.raw_identity_error(tid text, j jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    msg text;
    head text;
    f text[];
    addr text;
    err text;
BEGIN
    IF NOT j ? 'raw' THEN
        RETURN NULL;
    END IF;
    BEGIN
        msg := encode(decode(j->>'raw', 'base64'), 'escape');
    EXCEPTION WHEN others THEN
        RETURN 'raw: not valid base64';
    END;
    head := split_part(replace(msg, E'\r', ''), E'\n\n', 1);
    head := regexp_replace(head, E'\n[ \t]+', ' ', 'g');  -- unfold
    FOR f IN SELECT regexp_matches(head, E'(?:^|\n)(from|sender)[ \t]*:([^\n]*)', 'gi') LOOP
        FOR addr IN SELECT (regexp_matches(f[2], '[^<>\s,;:"]+@[^<>\s,;:"]+', 'g'))[1] LOOP
            err := engine.sender_domain_error(tid, addr, 'raw ' || initcap(f[1]));
            IF err IS NOT NULL THEN
                RETURN err;
            END IF;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

-- The header fields of a base64 raw message, unfolded, one per line (lower-case names kept
-- as written). NULL when raw is not base64.
CREATE OR REPLACE FUNCTION engine.raw_header_names(raw text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    msg text;
    head text;
BEGIN
    BEGIN
        msg := encode(decode(raw, 'base64'), 'escape');
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
    msg := replace(msg, E'\r', '');
    head := split_part(msg, E'\n\n', 1);
    RETURN ARRAY(SELECT lower(m[1]) FROM regexp_matches(head, E'(?:^|\\n)([!-9;-~]+)[ \\t]*:', 'g')
                 AS m);
END
$$;

CREATE OR REPLACE FUNCTION engine.raw_trace_error(j jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    names text[];
    bad text;
BEGIN
    IF NOT j ? 'raw' OR coalesce((SELECT value FROM engine.settings
                                   WHERE key = 'raw_trace_headers'), 'refuse') <> 'refuse' THEN
        RETURN NULL;
    END IF;
    names := engine.raw_header_names(j->>'raw');
    SELECT string_agg(DISTINCT n, ', ' ORDER BY n) INTO bad FROM unnest(names) AS n
     WHERE n IN ('received', 'received-spf', 'return-path', 'authentication-results',
                 'dkim-signature') OR n LIKE 'arc-%';
    IF bad IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN format('raw: trace/authentication header(s) %s may not be submitted; remove them,'
                  ' or have the operator set [security] raw_trace_headers = "strip"', bad);
END
$$;

-- engine.enqueue as in 002, plus the sending-domain and raw trace-header rules above.
CREATE OR REPLACE FUNCTION engine.enqueue(jobs jsonb)
RETURNS TABLE (ord integer, job_id bigint, idempotency_key text, error text)
LANGUAGE plpgsql AS $$
DECLARE
    j jsonb;
    i integer := 0;
    err text;
    body jsonb;
    raw_body bytea;
    h bytea;
    tid text;
    ikey text;
    snd text;
    new_id bigint;
    max_age interval := make_interval(secs => (SELECT value::float8 FROM engine.settings
                                               WHERE key = 'max_age_s'));
    due timestamptz;
BEGIN
    IF jsonb_typeof(jobs) = 'object' THEN
        jobs := jsonb_build_array(jobs);
    END IF;
    IF jsonb_typeof(jobs) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'engine.enqueue expects a job object or an array of jobs';
    END IF;
    FOR j IN SELECT value FROM jsonb_array_elements(jobs) LOOP
        i := i + 1;
        err := engine.validate_job(j);
        tid := j->>'tenant_id';
        ikey := j->>'idempotency_key';
        IF err IS NULL AND NOT EXISTS (SELECT 1 FROM oltp.tenants t WHERE t.tenant_id = tid) THEN
            err := format('unknown tenant %s (add it with: engine tenants add %s)', tid, tid);
        END IF;
        IF err IS NULL THEN
            err := engine.raw_trace_error(j);
        END IF;
        IF err IS NULL THEN
            err := engine.sender_domain_error(tid, j->>'from', 'from');
        END IF;
        IF err IS NULL THEN
            err := engine.raw_identity_error(tid, j);
        END IF;
        IF err IS NULL THEN
            SELECT engine.sender_domain_error(tid, substring(h.value FROM '[^<>\s]+@[^<>\s]+'),
                                              'header Sender')
              INTO err
              FROM jsonb_each_text(CASE WHEN jsonb_typeof(j->'headers') = 'object'
                                        THEN j->'headers' ELSE '{}' END) AS h
             WHERE lower(h.key) = 'sender';
        END IF;
        IF err IS NOT NULL THEN
            ord := i; job_id := NULL; idempotency_key := ikey; error := err;
            RETURN NEXT;
            CONTINUE;
        END IF;
        body := j - ARRAY['tenant_id','idempotency_key','to','priority','campaign_id','send_at',
                          'metadata'];
        raw_body := convert_to(body::text, 'UTF8');
        h := sha256(raw_body);
        snd := lower(j->>'from');
        INSERT INTO content.email_content (tenant_id, sha256, codec, body, size)
            VALUES (tid, h, 'json', raw_body, octet_length(raw_body))
            ON CONFLICT DO NOTHING;
        INSERT INTO content.email_messages (tenant_id, sha256, from_addr, subject, headers)
            VALUES (tid, h, j->>'from', j->>'subject', coalesce(j->'headers', '{}'))
            ON CONFLICT DO NOTHING;
        INSERT INTO oltp.senders (tenant_id, address, domain)
            VALUES (tid, snd, split_part(snd, '@', 2))
            ON CONFLICT DO NOTHING;
        due := coalesce((j->>'send_at')::timestamptz, now());
        new_id := NULL;
        INSERT INTO queue.jobs AS q (tenant_id, idempotency_key, priority, sender, recipient,
                                     content_sha256, campaign_id, metadata, send_at,
                                     next_attempt_at, expires_at)
            VALUES (tid, ikey,
                    CASE coalesce(j->>'priority', 'normal') WHEN 'high' THEN 0
                                                            WHEN 'low' THEN 2 ELSE 1 END,
                    snd, j->>'to', h, j->>'campaign_id', j->'metadata',
                    (j->>'send_at')::timestamptz, due, greatest(due, now()) + max_age)
            ON CONFLICT ON CONSTRAINT jobs_tenant_id_idempotency_key_key DO NOTHING
            RETURNING q.id INTO new_id;
        IF new_id IS NULL THEN
            SELECT q.id INTO new_id FROM queue.jobs q
             WHERE q.tenant_id = tid AND q.idempotency_key = ikey;
        END IF;
        ord := i; job_id := new_id; idempotency_key := ikey; error := NULL;
        RETURN NEXT;
    END LOOP;
    PERFORM pg_notify('engine_jobs', '');
END
$$;
