-- One row per (user, currency) a user has ever held. The house and the outside world have no
-- rows here: their balances are derived from postings, so deposits and trades never queue on
-- one hot row lock.
CREATE TABLE accounts (
  user_id uuid NOT NULL,
  currency text NOT NULL,
  balance numeric(38, 18) NOT NULL DEFAULT 0 CONSTRAINT balance_not_negative CHECK (balance >= 0),
  PRIMARY KEY (user_id, currency)
) WITH (fillfactor = 80); -- room for HOT updates: balance is not indexed

-- A balanced set of postings. No foreign keys from postings or orders: one statement writes a
-- transaction with its postings and order (journal-repository.ts), and a foreign-key check per
-- posting would add a lookup and a row lock to every write on the hot path.
CREATE TABLE transactions (
  id uuid PRIMARY KEY, -- UUIDv7: time-ordered, so id order is creation order
  kind text NOT NULL CHECK (kind IN ('deposit', 'withdrawal', 'transfer', 'trade')),
  user_id uuid NOT NULL, -- the acting user (the payer of a transfer)
  order_id uuid,
  create_time timestamptz NOT NULL
);

CREATE TABLE postings (
  transaction_id uuid NOT NULL,
  seq smallint NOT NULL, -- position within the transaction, for a stable listing order
  account text NOT NULL, -- 'user:<id>', 'house' or 'external'
  currency text NOT NULL,
  amount numeric(38, 18) NOT NULL CHECK (amount <> 0),
  PRIMARY KEY (transaction_id, seq)
);

-- A user's history; house and external postings (half of all rows) stay out of it.
CREATE INDEX postings_user_history ON postings (account, transaction_id)
  WHERE account LIKE 'user:%';

CREATE TABLE orders (
  id uuid PRIMARY KEY, -- UUIDv7
  user_id uuid NOT NULL,
  side text NOT NULL CHECK (side IN ('buy', 'sell')),
  asset text NOT NULL,
  quote_currency text NOT NULL,
  quantity numeric(38, 18) NOT NULL CHECK (quantity > 0),
  limit_price numeric(38, 18) CHECK (limit_price > 0),
  -- Unconstrained: exactly the price the rate service quoted, whatever its scale.
  price numeric NOT NULL CHECK (price > 0),
  notional numeric(38, 18) NOT NULL CHECK (notional > 0),
  rate_source text NOT NULL,
  rate_as_of timestamptz,
  transaction_id uuid NOT NULL,
  create_time timestamptz NOT NULL
);

CREATE INDEX orders_by_user ON orders (user_id, id);

-- The result of every mutating request that succeeded, replayed to retries of the same key.
CREATE TABLE idempotency_keys (
  user_id uuid NOT NULL,
  key text NOT NULL,
  rpc text NOT NULL,
  request bytea NOT NULL, -- canonical protobuf binary of the request, key left out
  response bytea NOT NULL, -- protobuf binary of the response, returned byte for byte
  create_time timestamptz NOT NULL,
  PRIMARY KEY (user_id, key)
);

-- Rows arrive in time order, so a BRIN index finds expired keys at almost no cost per insert.
CREATE INDEX idempotency_keys_age ON idempotency_keys USING brin (create_time);
