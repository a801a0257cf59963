-- engine.enqueue(jsonb): lets a platform service enqueue inside its own transaction.
-- Takes one Job object (DESIGN §8) or an array of them; returns one row per job:
-- (ord, job_id, idempotency_key, error). A refused job has job_id NULL and an error; the others
-- still go in. Idempotent on (tenant_id, idempotency_key). The daemon is woken by NOTIFY at commit.

CREATE TABLE IF NOT EXISTS engine.settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO engine.settings VALUES ('max_message_bytes', '26214400'), ('max_age_s', '259200')
    ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION engine.valid_address(a text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT a IS NOT NULL
       AND octet_length(a) <= 320
       AND a !~ '[\s<>(),;:"\[\]\\\x01-\x1f\x7f]'
       AND a ~ '^[^@]{1,64}@[^@.]([^@]*[^@.])?\.[^@.]+$'
       AND a !~ '\.\.';
$$;

CREATE OR REPLACE FUNCTION engine.validate_job(j jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    k text;
    v text;
    max_bytes bigint := (SELECT value::bigint FROM engine.settings WHERE key = 'max_message_bytes');
BEGIN
    IF jsonb_typeof(j) IS DISTINCT FROM 'object' THEN
        RETURN 'a job must be a JSON object';
    END IF;
    FOR k IN SELECT jsonb_object_keys(j) LOOP
        IF k NOT IN ('tenant_id','idempotency_key','from','to','subject','text','html','headers',
                     'attachments','priority','campaign_id','send_at','raw','metadata',
                     'list_unsubscribe') THEN
            RETURN format('unknown field %s', k);
        END IF;
    END LOOP;
    IF coalesce(j->>'tenant_id', '') = '' THEN RETURN 'tenant_id is required'; END IF;
    IF coalesce(j->>'idempotency_key', '') = '' THEN RETURN 'idempotency_key is required'; END IF;
    IF length(j->>'idempotency_key') > 255 OR j->>'idempotency_key' ~ '[\x00-\x1f\x7f]' THEN
        RETURN 'idempotency_key must be at most 255 characters without control characters';
    END IF;
    IF NOT engine.valid_address(j->>'to') THEN
        RETURN format('to: %s is not a valid address', coalesce(j->>'to', '(missing)'));
    END IF;
    IF NOT engine.valid_address(j->>'from') THEN
        RETURN format('from: %s is not a valid address', coalesce(j->>'from', '(missing)'));
    END IF;
    IF coalesce(j->>'subject', '') ~ '[\r\n\x00]' THEN
        RETURN 'subject contains CR/LF/NUL (header injection)';
    END IF;
    IF j ? 'headers' THEN
        IF jsonb_typeof(j->'headers') <> 'object' THEN RETURN 'headers must be an object'; END IF;
        FOR k, v IN SELECT key, value FROM jsonb_each_text(j->'headers') LOOP
            IF k !~ '^[!-9;-~]+$' THEN RETURN format('header name %s is invalid', k); END IF;
            IF v ~ '[\r\n\x00]' THEN
                RETURN format('header %s contains CR/LF/NUL (header injection)', k);
            END IF;
            IF lower(k) IN ('bcc','return-path','dkim-signature','message-id','date','to','from') THEN
                RETURN format('header %s is set by the engine and may not be given', k);
            END IF;
        END LOOP;
    END IF;
    IF j ? 'raw' AND (j ? 'text' OR j ? 'html' OR j ? 'attachments') THEN
        RETURN 'give either raw or text/html/attachments, not both';
    END IF;
    IF NOT (j ? 'raw' OR j ? 'text' OR j ? 'html') THEN
        RETURN 'one of text, html or raw is required';
    END IF;
    IF coalesce(j->>'priority', 'normal') NOT IN ('high','normal','low') THEN
        RETURN format('priority must be high, normal or low, not %s', j->>'priority');
    END IF;
    IF j ? 'send_at' THEN
        BEGIN
            PERFORM (j->>'send_at')::timestamptz;
        EXCEPTION WHEN others THEN
            RETURN format('send_at %s is not an ISO 8601 timestamp', j->>'send_at');
        END;
    END IF;
    IF octet_length(j::text) > max_bytes THEN
        RETURN format('job is %s bytes, over the %s byte limit', octet_length(j::text), max_bytes);
    END IF;
    RETURN NULL;
END
$$;

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
