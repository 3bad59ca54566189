-- PlaceOrder's database transaction for pgbench: the statements of
-- services/order/src/journal-repository.ts in the same order and the same round trips (BEGIN,
-- INSERT_ENTRY, then CREDIT and DEBIT in (user_id, currency) order, sent as one pipeline; then
-- COMMIT), with the service's parameters as pgbench variables or inline expressions. A market buy
-- of 0.001 BTC at 64000.123456789 USD by one of the 1,000 users of setup.sql; a sell runs the
-- same statements with the debit first. Run with prepared statements, as the service does:
--   pgbench -n -M prepared -f bench/sql/place-order.sql -c 16 -j 2 -T 30 "$DATABASE_URL"
-- The service makes its ids and keys in its own process, here they are made in SQL; the request
-- and response bytes are stand-ins of the service's sizes.

\set u random(1, 1000)
\set transaction random(1, 9223372036854775807)
\set order random(1, 9223372036854775807)

\startpipeline
BEGIN;

WITH k AS (
  INSERT INTO idempotency_keys (user_id, key, rpc, request, response, create_time)
  VALUES (('00000000-0000-7000-8000-' || lpad(:u::text, 12, '0'))::uuid,
          md5(random()::text), 'PlaceOrder',
          decode(repeat('0a', 110), 'hex'), decode(repeat('0a', 300), 'hex'), now())
  ON CONFLICT (user_id, key) DO NOTHING
  RETURNING 1
), t AS (
  INSERT INTO transactions (id, kind, user_id, order_id, create_time)
  SELECT bench_uuid(:transaction), 'trade',
         ('00000000-0000-7000-8000-' || lpad(:u::text, 12, '0'))::uuid, bench_uuid(:order), now()
  FROM k
  RETURNING id, order_id
), p AS (
  INSERT INTO postings (transaction_id, seq, account, currency, amount)
  SELECT t.id, x.seq, x.account, x.currency, x.amount
  FROM t, unnest(
    ARRAY['user:00000000-0000-7000-8000-' || lpad(:u::text, 12, '0'), 'house', 'house',
          'user:00000000-0000-7000-8000-' || lpad(:u::text, 12, '0')]::text[],
    ARRAY['USD', 'USD', 'BTC', 'BTC']::text[],
    ARRAY['-64.000123456789', '64.000123456789', '-0.001', '0.001']::numeric[]
  ) WITH ORDINALITY AS x (account, currency, amount, seq)
), o AS (
  INSERT INTO orders (id, user_id, side, asset, quote_currency, quantity, limit_price, price,
                      notional, rate_source, rate_as_of, transaction_id, create_time)
  SELECT t.order_id, ('00000000-0000-7000-8000-' || lpad(:u::text, 12, '0'))::uuid, 'buy', 'BTC',
         'USD', 0.001, NULL, 64000.123456789, 64.000123456789, 'cache', now(), t.id, now() FROM t
  WHERE t.order_id IS NOT NULL
)
SELECT 1 FROM t;

-- CREDIT BTC, then DEBIT USD: 'BTC' sorts before 'USD'.
INSERT INTO accounts AS a (user_id, currency, balance)
VALUES (('00000000-0000-7000-8000-' || lpad(:u::text, 12, '0'))::uuid, 'BTC', 0.001)
ON CONFLICT (user_id, currency) DO UPDATE SET balance = a.balance + excluded.balance;

UPDATE accounts SET balance = balance - 64.000123456789
WHERE user_id = ('00000000-0000-7000-8000-' || lpad(:u::text, 12, '0'))::uuid
  AND currency = 'USD' AND balance >= 64.000123456789;
\endpipeline

COMMIT;
