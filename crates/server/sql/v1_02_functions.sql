-- oversync sync layout v1: the two trigger functions installed on every registered table.
-- Behaviour is part of the protocol (a Go server sharing the database relies on it): the
-- owner guard fills or checks `_sync_scope_id` against the bundle context, the capture
-- function appends one stage row per row event (two for a sync-key change). Writes without a
-- bundle context bump sync.rejected_registered_write_seq (the increment survives the abort)
-- and fail with SQLSTATE P0001.

CREATE OR REPLACE FUNCTION sync.enforce_registered_row_owner()
RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    actor TEXT := NULLIF(current_setting('oversync.bundle_user_id', true), '');
BEGIN
    IF actor IS NULL THEN
        PERFORM nextval('sync.rejected_registered_write_seq');
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = format(
            'writing registered table %I.%I requires an oversync sync bundle context',
            TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;

    IF TG_OP = 'INSERT' THEN
        IF NEW._sync_scope_id IS NULL OR NEW._sync_scope_id = '' THEN
            NEW._sync_scope_id := actor;
        ELSIF NEW._sync_scope_id <> actor THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = format(
                'scope mismatch on registered table %I.%I: actor %s cannot write owner %s',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, actor, NEW._sync_scope_id);
        END IF;
        RETURN NEW;
    END IF;

    IF OLD._sync_scope_id <> actor THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = format(
            'scope mismatch on registered table %I.%I: actor %s cannot %s owner %s',
            TG_TABLE_SCHEMA, TG_TABLE_NAME, actor, lower(TG_OP), OLD._sync_scope_id);
    END IF;

    IF TG_OP = 'UPDATE' THEN
        IF NEW._sync_scope_id IS DISTINCT FROM OLD._sync_scope_id THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = format(
                'scope mutation is not allowed on registered table %I.%I',
                TG_TABLE_SCHEMA, TG_TABLE_NAME);
        END IF;
        RETURN NEW;
    END IF;

    RETURN OLD;
END;
$fn$;

-- Arguments: TG_ARGV[0] sync key column, TG_ARGV[1] key kind ('1' uuid, '2' text),
-- TG_ARGV[2] table_id.
CREATE OR REPLACE FUNCTION sync.capture_registered_row_change()
RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    actor       TEXT := NULLIF(current_setting('oversync.bundle_user_id', true), '');
    actor_pk    TEXT;
    key_column  TEXT := NULLIF(TG_ARGV[0], '');
    key_kind    TEXT := NULLIF(TG_ARGV[1], '');
    tbl_id      TEXT := NULLIF(TG_ARGV[2], '');
    new_image   JSONB;
    old_key     BYTEA;
    new_key     BYTEA;
BEGIN
    IF actor IS NULL THEN
        PERFORM nextval('sync.rejected_registered_write_seq');
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = format(
            'writing registered table %I.%I requires an oversync sync bundle context',
            TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;
    actor_pk := NULLIF(current_setting('oversync.bundle_user_pk', true), '');
    IF actor_pk IS NULL THEN
        RAISE EXCEPTION 'oversync bundle context lacks user_pk for %.%',
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    IF key_column IS NULL OR key_kind IS NULL OR tbl_id IS NULL THEN
        RAISE EXCEPTION 'oversync capture trigger on %.% lacks its arguments',
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;

    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF OLD._sync_scope_id <> actor THEN
            RAISE EXCEPTION 'oversync capture scope mismatch for %.%',
                TG_TABLE_SCHEMA, TG_TABLE_NAME;
        END IF;
        IF key_kind = '1' THEN
            old_key := uuid_send((to_jsonb(OLD) ->> key_column)::uuid);
        ELSE
            old_key := convert_to(to_jsonb(OLD) ->> key_column, 'UTF8');
        END IF;
    END IF;

    IF TG_OP = 'DELETE' THEN
        INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
        VALUES (txid_current(), actor_pk::bigint, tbl_id::integer, 3, old_key, NULL);
        RETURN OLD;
    END IF;

    IF NEW._sync_scope_id <> actor THEN
        RAISE EXCEPTION 'oversync capture scope mismatch for %.%',
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    new_image := to_jsonb(NEW) - '_sync_scope_id';
    IF key_kind = '1' THEN
        new_key := uuid_send((new_image ->> key_column)::uuid);
    ELSE
        new_key := convert_to(new_image ->> key_column, 'UTF8');
    END IF;

    IF TG_OP = 'UPDATE' AND old_key IS DISTINCT FROM new_key THEN
        -- A sync-key change is a delete of the old identity and an insert of the new one.
        INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
        VALUES (txid_current(), actor_pk::bigint, tbl_id::integer, 3, old_key, NULL),
               (txid_current(), actor_pk::bigint, tbl_id::integer, 1, new_key, new_image);
        RETURN NEW;
    END IF;

    INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
    VALUES (txid_current(), actor_pk::bigint, tbl_id::integer,
            CASE TG_OP WHEN 'INSERT' THEN 1 ELSE 2 END, new_key, new_image);
    RETURN NEW;
END;
$fn$;
