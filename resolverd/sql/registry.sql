-- The instrument registry: schema instrument_registry, version 1.
--
-- resolverd.db.init_schema runs this file in one transaction, under an advisory lock, after
-- checking schema_version; every statement is idempotent, so running it again changes nothing.
-- The constraints are the registry's rules, held by the database whoever writes to it:
--
-- * an instrument key is non-empty, has no blank at either end, and names one instrument;
-- * an exchange token (> 0) belongs to at most one key within its (exchange, segment): it is
--   the cross-broker join key, and two keys on one contract would split its tokens;
-- * a broker gives a key at most one token; a token names at most one key within its feed;
-- * a feed belongs to one broker and holds tokens of one kind: 'int' tokens are canonical
--   decimals below 2**64 - 1 (that value is the snapshot's NO_TOKEN), 'str' tokens are text;
-- * strike and tick size are finite and >= 0, lot size >= 0, an ISIN is '' or 12 characters;
-- * key, token, broker and feed names fit the snapshot layout (resolverd.compiler).
--
-- Every statement that writes to one of the three tables notifies channel
-- 'instrument_registry_changed' (resolverd.db.NOTIFY_CHANNEL) with the table's name as payload,
-- delivered when the writing transaction commits.

SET LOCAL client_min_messages = warning;

CREATE SCHEMA IF NOT EXISTS instrument_registry;

COMMENT ON SCHEMA instrument_registry IS
    'resolverd instrument registry; version in instrument_registry.schema_version';

-- One row. A later schema adds a migration in resolverd.db and bumps the version.
CREATE TABLE IF NOT EXISTS instrument_registry.schema_version (
    singleton boolean NOT NULL DEFAULT true,
    version integer NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schema_version_pkey PRIMARY KEY (singleton),
    CONSTRAINT schema_version_one_row CHECK (singleton)
);

INSERT INTO instrument_registry.schema_version (version) VALUES (1) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS instrument_registry.instrument_keys (
    -- Byte order (COLLATE "C"): the loader reads keys in this order straight off the primary
    -- key's index, with no sort, and byte comparisons keep ingests cheaper than a locale's.
    instrument_key text COLLATE "C" NOT NULL,
    exchange text NOT NULL,
    segment text NOT NULL,
    instrument_type text NOT NULL,
    name text NOT NULL DEFAULT '',
    expiry date,
    strike float8 NOT NULL DEFAULT 0,
    tick_size float8 NOT NULL DEFAULT 0,
    lot_size integer NOT NULL DEFAULT 1,
    isin text NOT NULL DEFAULT '',
    exchange_token bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT instrument_keys_pkey PRIMARY KEY (instrument_key),
    CONSTRAINT instrument_key_is_trimmed CHECK (instrument_key ~ '^\S(.*\S)?$'),
    CONSTRAINT instrument_key_fits_layout CHECK (octet_length(instrument_key) <= 4096),
    CONSTRAINT exchange_not_empty CHECK (exchange <> ''),
    CONSTRAINT segment_not_empty CHECK (segment <> ''),
    CONSTRAINT instrument_type_not_empty CHECK (instrument_type <> ''),
    -- NaN sorts above Infinity in PostgreSQL, so "< Infinity" refuses both.
    CONSTRAINT strike_is_finite_non_negative CHECK (strike >= 0 AND strike < 'Infinity'),
    CONSTRAINT tick_size_is_finite_non_negative CHECK (tick_size >= 0 AND tick_size < 'Infinity'),
    CONSTRAINT lot_size_non_negative CHECK (lot_size >= 0),
    CONSTRAINT isin_is_empty_or_12_characters CHECK (isin = '' OR isin ~ '^[A-Z0-9]{12}$'),
    CONSTRAINT exchange_token_non_negative CHECK (exchange_token >= 0)
);

COMMENT ON TABLE instrument_registry.instrument_keys IS
    'One row per instrument: its canonical key (the first source to list it names it) and its '
    'metadata in Kite''s vocabulary (resolverd.loaders._common).';

-- 0 means "the source has no exchange token"; such rows join nothing and may share it.
CREATE UNIQUE INDEX IF NOT EXISTS instrument_keys_exchange_token_key
    ON instrument_registry.instrument_keys (exchange, segment, exchange_token)
    WHERE exchange_token > 0;

CREATE TABLE IF NOT EXISTS instrument_registry.broker_feeds (
    feed text NOT NULL,
    broker text NOT NULL,
    token_kind text NOT NULL,
    CONSTRAINT broker_feeds_pkey PRIMARY KEY (feed),
    CONSTRAINT token_kind_is_int_or_str CHECK (token_kind IN ('int', 'str')),
    -- The layout stores broker and feed names as at most 32 ASCII bytes.
    CONSTRAINT feed_name_fits_layout CHECK (feed ~ '^[ -~]{1,32}$'),
    CONSTRAINT broker_name_fits_layout CHECK (broker ~ '^[ -~]{1,32}$'),
    -- The target of the tokens' composite foreign key: a token row repeats its feed's broker
    -- and kind, so that a CHECK on the token row can test its kind.
    CONSTRAINT broker_feeds_feed_broker_token_kind_key UNIQUE (feed, broker, token_kind)
);

COMMENT ON TABLE instrument_registry.broker_feeds IS
    'The namespaces tokens are unique in: Kite is one feed, Angel One one per exchange segment.';

CREATE TABLE IF NOT EXISTS instrument_registry.broker_instrument_tokens (
    instrument_key text COLLATE "C" NOT NULL,
    broker text NOT NULL,
    feed text NOT NULL,
    token_kind text NOT NULL,
    token text NOT NULL,
    CONSTRAINT broker_instrument_tokens_pkey PRIMARY KEY (instrument_key, broker),
    CONSTRAINT broker_instrument_tokens_feed_token_key UNIQUE (feed, token),
    CONSTRAINT broker_instrument_tokens_instrument_key_fkey FOREIGN KEY (instrument_key)
        REFERENCES instrument_registry.instrument_keys (instrument_key)
        ON UPDATE CASCADE ON DELETE CASCADE,
    -- NO ACTION: a feed cannot change broker or kind while it holds a token.
    CONSTRAINT broker_instrument_tokens_feed_fkey FOREIGN KEY (feed, broker, token_kind)
        REFERENCES instrument_registry.broker_feeds (feed, broker, token_kind),
    CONSTRAINT token_not_empty CHECK (token <> ''),
    CONSTRAINT token_fits_layout CHECK (octet_length(token) <= 4096),
    -- Canonical decimal (no sign, no leading zero), so that text equality is integer equality
    -- and UNIQUE (feed, token) catches 7 written as 07.
    CONSTRAINT int_token_is_decimal CHECK (token_kind = 'str' OR token ~ '^(0|[1-9][0-9]{0,19})$'),
    -- A CASE, not AND: the cast must only see digits, and AND does not promise an order.
    CONSTRAINT int_token_fits_uint64 CHECK (
        CASE WHEN token_kind = 'int' AND token ~ '^[0-9]{1,20}$'
             THEN token::numeric < 18446744073709551615
             ELSE true
        END
    )
);

COMMENT ON TABLE instrument_registry.broker_instrument_tokens IS
    'Each broker''s token for each instrument, and the feed it is unique in.';

CREATE INDEX IF NOT EXISTS broker_instrument_tokens_broker_idx
    ON instrument_registry.broker_instrument_tokens (broker);

CREATE OR REPLACE FUNCTION instrument_registry.notify_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Notifications are delivered at commit, and identical ones within one transaction are
    -- folded into one, so an ingest sends at most one per table however many rows it writes.
    PERFORM pg_notify('instrument_registry_changed', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

-- CREATE OR REPLACE TRIGGER needs PostgreSQL 14; creating only the missing triggers works from
-- PostgreSQL 11 and leaves a re-run's triggers alone.
DO $$
DECLARE
    target text;
BEGIN
    FOREACH target IN ARRAY ARRAY['instrument_keys', 'broker_feeds', 'broker_instrument_tokens']
    LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_trigger
             WHERE tgname = 'notify_changed'
               AND tgrelid = format('instrument_registry.%I', target)::regclass
        ) THEN
            EXECUTE format(
                'CREATE TRIGGER notify_changed'
                ' AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON instrument_registry.%I'
                ' FOR EACH STATEMENT EXECUTE FUNCTION instrument_registry.notify_changed()',
                target
            );
        END IF;
    END LOOP;
END
$$;
