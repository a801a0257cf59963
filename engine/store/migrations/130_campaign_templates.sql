-- Campaign templates (issue 19 part 3, docs/compose.md "Campaign templates"): one template per
-- tenant x campaign x version in the content tier, stored once; a templated job carries only its
-- recipient's variables and the version current when it was enqueued, and is rendered at send
-- time. `required` is the variable names the template uses without a default (computed by
-- jinja2.meta when the version is stored), so both enqueue paths refuse a job that lacks one.
CREATE TABLE IF NOT EXISTS content.campaign_templates (
    tenant_id   text NOT NULL,
    campaign_id text NOT NULL,
    version     integer NOT NULL,
    subject     text NOT NULL,
    text_body   text,
    html_body   text,
    required    text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id, version)
);

ALTER TABLE queue.jobs ADD COLUMN IF NOT EXISTS template_version integer;
ALTER TABLE queue.jobs ADD COLUMN IF NOT EXISTS variables jsonb;

-- Checks a templated job's own fields (engine.validate_job calls it when `variables` is given);
-- the campaign's required names are checked by engine.enqueue_unchecked, which knows the tenant.
CREATE OR REPLACE FUNCTION engine.template_job_error(j jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF coalesce(j->>'campaign_id', '') = '' THEN
        RETURN 'variables: a templated job needs campaign_id (the campaign whose template to render)';
    END IF;
    IF j ? 'subject' OR j ? 'text' OR j ? 'html' OR j ? 'raw' THEN
        RETURN 'variables: a templated job takes subject/text/html from its campaign; remove'
               ' subject, text, html and raw';
    END IF;
    IF jsonb_typeof(j->'variables') IS DISTINCT FROM 'object' THEN
        RETURN 'variables: must be a JSON object of names to values';
    END IF;
    IF octet_length((j->'variables')::text) > 16384 THEN
        RETURN format('variables: %s bytes as JSON, over the limit of 16384',
                      octet_length((j->'variables')::text));
    END IF;
    RETURN NULL;
END
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
                     'list_unsubscribe','variables') THEN
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
    IF NOT (j ? 'raw' OR j ? 'text' OR j ? 'html' OR j ? 'variables') THEN
        RETURN 'one of text, html or raw is required (or campaign_id and variables)';
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
    IF j ? 'variables' THEN
        RETURN engine.template_job_error(j);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION engine.enqueue_unchecked(jobs jsonb)
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
    tpl_version integer;
    tpl_required text[];
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
        tpl_version := NULL;
        IF err IS NULL AND j ? 'variables' THEN
            SELECT c.version, c.required INTO tpl_version, tpl_required FROM content.campaign_templates c
             WHERE c.tenant_id = tid AND c.campaign_id = j->>'campaign_id'
             ORDER BY c.version DESC LIMIT 1;
            IF tpl_version IS NULL THEN
                err := format('campaign_id: no template stored for campaign %s'
                              ' (PUT /v1/campaigns/%s or engine campaigns set first)',
                              j->>'campaign_id', j->>'campaign_id');
            ELSIF NOT (j->'variables' ?& tpl_required) THEN
                err := format('variables: missing %s used by campaign %s version %s',
                              array_to_string(ARRAY(SELECT unnest(tpl_required)
                                                    EXCEPT SELECT jsonb_object_keys(j->'variables')
                                                    ORDER BY 1), ', '),
                              j->>'campaign_id', tpl_version);
            END IF;
        END IF;
        IF err IS NOT NULL THEN
            ord := i; job_id := NULL; idempotency_key := ikey; error := err;
            RETURN NEXT;
            CONTINUE;
        END IF;
        body := j - ARRAY['tenant_id','idempotency_key','to','priority','campaign_id','send_at',
                          'metadata','variables'];
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
                                     next_attempt_at, expires_at, template_version, variables)
            VALUES (tid, ikey,
                    CASE coalesce(j->>'priority', 'normal') WHEN 'high' THEN 0
                                                            WHEN 'low' THEN 2 ELSE 1 END,
                    snd, j->>'to', h, j->>'campaign_id', j->'metadata',
                    (j->>'send_at')::timestamptz, due, greatest(due, now()) + max_age,
                    tpl_version, CASE WHEN tpl_version IS NOT NULL THEN j->'variables' END)
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

SELECT engine.grant_roles();
