-- Data for place-order.sql: 1,000 users, each with 1e9 USD and 1e6 BTC, so that no order of a
-- benchmark run fails for lack of money. Run with psql on a database the order service migrated
-- (`node services/order/src/main.ts migrate`), or on an empty one for pgbench alone (the
-- service's migration is then applied here, unrecorded):
--   psql -v ON_ERROR_STOP=1 -f bench/sql/setup.sql "$DATABASE_URL"
-- It empties the order service's tables first: never point it at data you want to keep.

SELECT to_regclass('accounts') IS NULL AS empty_database \gset
\if :empty_database
  \ir ../../services/order/migrations/0001_ledger.sql
\endif

TRUNCATE accounts, transactions, postings, orders, idempotency_keys;

-- User n (1..1000) has the id 00000000-0000-7000-8000-<n as 12 digits>, as in place-order.sql.
INSERT INTO accounts (user_id, currency, balance)
SELECT ('00000000-0000-7000-8000-' || lpad(n::text, 12, '0'))::uuid, currency, balance
FROM generate_series(1, 1000) AS n,
     (VALUES ('BTC', 1000000::numeric), ('USD', 1000000000::numeric)) AS money (currency, balance);

-- A time-ordered id like the service's UUIDv7 (a millisecond prefix, then random bits from
-- pgbench), so the primary-key indexes grow at their right edge as they do under the service.
CREATE OR REPLACE FUNCTION bench_uuid(bits bigint) RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0')
          || lpad(to_hex(bits), 20, '0'))::uuid
$$;

VACUUM ANALYZE;
