-- The content tier on its own server ([database.content] dsn): the SQL enqueue path
-- (engine.enqueue, engine.enqueue_unchecked) runs on the [database] server and cannot store
-- content on another one, so with content apart it is refused, by a statement trigger on the
-- main server's content tables that `engine run` and `engine migrate` install (and remove
-- again when content comes back): any write of content on the wrong server fails loudly
-- instead of storing content the dispatcher would never read. No trigger, no cost, when content
-- shares the server.
CREATE OR REPLACE FUNCTION engine.content_elsewhere() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the content tier lives on another server ([database.content] dsn): %.% is not written on this one', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING HINT = 'enqueue through the engine (API, CLI, client library), not the SQL engine.enqueue function',
              ERRCODE = 'feature_not_supported';
END
$$;

CREATE OR REPLACE FUNCTION engine.set_content_apart(apart boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['email_content', 'email_messages', 'attachments',
                             'campaign_templates', 'inbound_messages'] LOOP
        -- No DDL (and its exclusive lock) when the table is already as asked.
        CONTINUE WHEN apart = EXISTS (
            SELECT 1 FROM pg_trigger
             WHERE tgrelid = format('content.%I', t)::regclass AND tgname = 'content_elsewhere');
        EXECUTE format('DROP TRIGGER IF EXISTS content_elsewhere ON content.%I', t);
        IF apart THEN
            EXECUTE format('CREATE TRIGGER content_elsewhere BEFORE INSERT OR UPDATE'
                           ' ON content.%I FOR EACH STATEMENT'
                           ' EXECUTE FUNCTION engine.content_elsewhere()', t);
        END IF;
    END LOOP;
END
$$;
